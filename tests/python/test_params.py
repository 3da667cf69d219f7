"""Bound parameters through real clients: ADBC (`?` and `$1`, executemany, prepare), pandas and
polars, against the real gateway over the network. The `orders` table (conftest) holds
order i at partition i % 3, offset i // 3, customer c{i % 7}, amount i * 2.5."""

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest


@pytest.fixture
def conn(orders):
    with flightsql.connect(orders["gateway"].uri, autocommit=True) as conn:
        yield conn


def rows(cur):
    return cur.fetch_arrow_table().to_pylist()


def expect_invalid_argument(excinfo, *fragments):
    """The gateway's InvalidArgument reaches the client with its message."""
    error = excinfo.value
    assert error.status_code == adbc_driver_manager.AdbcStatusCode.INVALID_ARGUMENT, repr(error)
    for fragment in fragments:
        assert fragment in str(error), str(error)


def test_question_marks_filter_by_partition_and_offset(conn, orders):
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT _partition, _offset, id FROM {orders['table']} "
            "WHERE _partition = ? AND _offset < ? ORDER BY _offset",
            parameters=(1, 3),
        )
        assert rows(cur) == [{"_partition": 1, "_offset": o, "id": 3 * o + 1} for o in range(3)]


def test_dollar_parameters_filter_json_and_string_columns(conn, orders):
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT id, customer FROM {orders['table']} WHERE customer = $1 AND amount > $2 ORDER BY id",
            parameters=("c3", 600.0),
        )
        expected = [i for i in range(300) if i % 7 == 3 and i * 2.5 > 600.0]
        table = cur.fetch_arrow_table()
    assert table.column("id").to_pylist() == expected
    assert set(table.column("customer").to_pylist()) == {"c3"}


def test_one_parameter_used_twice_and_a_question_mark_in_a_string(conn, orders):
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT id, '?' AS q FROM {orders['table']} WHERE id >= $1 AND id < $1 + 3 ORDER BY id",
            parameters=(10,),
        )
        assert rows(cur) == [{"id": 10, "q": "?"}, {"id": 11, "q": "?"}, {"id": 12, "q": "?"}]


def test_parameter_in_limit(conn, orders):
    with conn.cursor() as cur:
        cur.execute(f"SELECT id FROM {orders['table']} WHERE _error IS NULL ORDER BY id LIMIT ?", parameters=(4,))
        assert [r["id"] for r in rows(cur)] == [0, 1, 2, 3]


def test_untyped_parameter_prepares_and_takes_the_bound_type(conn):
    with conn.cursor() as cur:
        schema = cur.adbc_prepare("SELECT ? AS x")
        assert schema.field(0).type == pa.null()
        cur.execute("SELECT ? AS x", parameters=("hello",))
        table = cur.fetch_arrow_table()
    assert table.to_pylist() == [{"x": "hello"}]
    assert table.schema.field("x").type == pa.string()


def test_rows_of_parameters_run_the_query_once_each_in_row_order(conn, orders):
    """Several parameter rows (Arrow data): one run per row, results concatenated in row order."""
    params = pa.table({"0": pa.array([9, 2, 5], pa.int64())})
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, customer FROM {orders['table']} WHERE id = ?", parameters=params)
        assert rows(cur) == [{"id": 9, "customer": "c2"}, {"id": 2, "customer": "c2"}, {"id": 5, "customer": "c5"}]


def test_a_null_parameter_in_one_row_makes_the_column_nullable(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT ? AS x", parameters=pa.table({"0": pa.array([1, None, 3], pa.int64())}))
        table = cur.fetch_arrow_table()
    assert table.column("x").to_pylist() == [1, None, 3]
    assert table.schema.field("x").nullable


def peak_rss_kib(gateway):
    with open(f"/proc/{gateway.process.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def test_many_parameter_rows_are_bound_one_run_at_a_time(conn, orders):
    """Each run is bound when it starts: 4,000 rows held about 160 MB when all were bound up front."""
    before = peak_rss_kib(orders["gateway"])
    with conn.cursor() as cur:
        cur.execute("SELECT $1 + 1 AS x", parameters=pa.table({"0": pa.array(range(4000), pa.int64())}))
        assert cur.fetch_arrow_table().column("x").to_pylist() == list(range(1, 4001))
    grown_mib = (peak_rss_kib(orders["gateway"]) - before) / 1024
    assert grown_mib < 60, f"the gateway's peak RSS grew {grown_mib:.0f} MiB"


def test_executemany_runs_the_query_per_row(conn, orders):
    """ADBC's executemany runs the query for each row; its rowcount is the rows all runs returned."""
    with conn.cursor() as cur:
        cur.executemany(f"SELECT id FROM {orders['table']} WHERE id < ?", [(1,), (3,), (0,)])
        assert cur.rowcount == 1 + 3 + 0


def test_prepared_handle_reused_with_different_parameters(conn, orders):
    sql = f"SELECT count(*) AS n FROM {orders['table']} WHERE _partition = ? AND _offset >= ?"
    with conn.cursor() as cur:
        cur.execute(sql, parameters=(0, 0))
        assert rows(cur) == [{"n": 101}]  # 100 orders and the bad record
        cur.execute(sql, parameters=(2, 90))
        assert rows(cur) == [{"n": 10}]
        cur.execute(sql, parameters=(1, 100))
        assert rows(cur) == [{"n": 0}]


def test_parameter_schema_from_prepare(conn, orders):
    with conn.cursor() as cur:
        schema = cur.adbc_prepare(
            f"SELECT id FROM {orders['table']} WHERE _partition = ? AND customer = ? AND _offset < ?"
        )
        assert schema.names == ["$1", "$2", "$3"]
        assert schema.types == [pa.int32(), pa.string(), pa.int64()]
        result = cur.adbc_execute_schema(f"SELECT id, customer FROM {orders['table']} WHERE id = ?", parameters=(1,))
    assert result.names == ["id", "customer"]
    assert result.field("customer").type == pa.string()


def test_union_parameters_are_unwrapped(conn, orders):
    """flightsql-dbapi binds each parameter as a dense union: the member's value is used."""
    union = pa.UnionArray.from_dense(
        pa.array([1, 0], pa.int8()),
        pa.array([0, 0], pa.int32()),
        [pa.array([7], pa.int64()), pa.array(["c4"], pa.string())],
        ["int", "str"],
    )
    params = pa.record_batch([union, pa.array([30, 30], pa.int64())], names=["0", "1"])
    with conn.cursor() as cur:
        # Row 1: customer = 'c4'; row 2: customer = 7 (cast to '7', no match).
        cur.execute(f"SELECT id FROM {orders['table']} WHERE customer = ? AND id < ? ORDER BY id", parameters=params)
        assert [r["id"] for r in rows(cur)] == [4, 11, 18, 25]


def test_wrong_parameter_count_is_an_invalid_argument(conn, orders):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as excinfo:
            cur.execute(f"SELECT id FROM {orders['table']} WHERE id = ? AND customer = ?", parameters=(1,))
    expect_invalid_argument(excinfo, "the statement has 2 parameter(s) ($1, $2) but 1 were bound: $2 missing")


def test_wrong_parameter_type_is_an_invalid_argument(conn, orders):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as excinfo:
            cur.execute(f"SELECT id FROM {orders['table']} WHERE _offset = ?", parameters=("abc",))
    expect_invalid_argument(excinfo, "parameter $1 must be Int64, got 'abc' (Utf8)")


def test_executing_without_parameters_names_the_missing_ones(conn, orders):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as excinfo:
            cur.execute(f"SELECT id FROM {orders['table']} WHERE id = ? OR id = ?")
    expect_invalid_argument(excinfo, "missing parameter(s) $1, $2")


def test_pandas_read_sql_with_params(conn, orders):
    pd = pytest.importorskip("pandas")
    sql = f"SELECT id, amount FROM {orders['table']} WHERE id BETWEEN ? AND ? ORDER BY id"
    try:
        df = pd.read_sql(sql, conn, params=(3, 5))
    except NotImplementedError as why:
        # pandas' ADBC path refuses params itself (pandas.io.sql.ADBCDatabase.read_query);
        # the DataFrame then comes from the ADBC cursor.
        with conn.cursor() as cur:
            cur.execute(sql, parameters=(3, 5))
            df = cur.fetch_df()
        assert list(df.id) == [3, 4, 5] and list(df.amount) == [7.5, 10.0, 12.5]
        pytest.skip(f"pandas {pd.__version__} read_sql: {why} (the ADBC cursor's fetch_df works)")
    assert list(df.id) == [3, 4, 5] and list(df.amount) == [7.5, 10.0, 12.5]


def test_polars_read_database_with_parameters(conn, orders):
    pl = pytest.importorskip("polars", reason="polars is not installed in the test environment")
    df = pl.read_database(
        f"SELECT id FROM {orders['table']} WHERE customer = ? ORDER BY id LIMIT 3",
        conn,
        execute_options={"parameters": ("c1",)},
    )
    assert df["id"].to_list() == [1, 8, 15]


def test_execute_schema_is_get_schema(conn, orders):
    """ADBC's ExecuteSchema on a statement it has not prepared is Flight's GetSchema: the query is
    planned, not run."""
    with conn.cursor() as cur:
        stmt = cur.adbc_statement
        stmt.set_sql_query(f"SELECT id, customer, _offset FROM {orders['table']} WHERE _offset >= 0")
        schema = pa.schema(stmt.execute_schema())
    assert schema.names == ["id", "customer", "_offset"]
    assert schema.types == [pa.int64(), pa.string(), pa.int64()]
