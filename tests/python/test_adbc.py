"""The real ADBC Flight SQL driver against the real gateway."""

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest


@pytest.fixture
def conn(orders):
    with flightsql.connect(orders["gateway"].uri, autocommit=True) as conn:
        yield conn


def test_query_returns_every_record_as_arrow(conn, orders):
    with conn.cursor() as cur:
        cur.execute(f"SELECT _partition, _offset, id, customer, amount, _error FROM {orders['table']}")
        table = cur.fetch_arrow_table()
    assert table.num_rows == orders["count"]
    assert table.schema.field("customer").type == pa.string()
    assert table.schema.field("_partition").type == pa.int32()
    ids = sorted(i for i in table.column("id").to_pylist() if i is not None)
    assert ids == list(range(300))
    errors = [e for e in table.column("_error").to_pylist() if e is not None]
    assert len(errors) == 1 and "invalid JSON" in errors[0]
    keys = set(zip(table.column("_partition").to_pylist(), table.column("_offset").to_pylist()))
    assert len(keys) == orders["count"], "no record twice"


def test_fetch_df_gives_pandas(conn, orders):
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT customer, sum(amount) AS total FROM {orders['table']} "
            "WHERE _error IS NULL GROUP BY customer ORDER BY customer"
        )
        df = cur.fetch_df()
    assert list(df.columns) == ["customer", "total"]
    assert len(df) == 7
    expected = sum(i * 2.5 for i in range(300) if i % 7 == 0)
    assert df.loc[df.customer == "c0", "total"].iloc[0] == pytest.approx(expected)


def test_timestamps_are_utc_microseconds(conn, orders):
    with conn.cursor() as cur:
        cur.execute(f"SELECT _timestamp FROM {orders['table']} LIMIT 1")
        table = cur.fetch_arrow_table()
    assert table.schema.field("_timestamp").type == pa.timestamp("us", tz="UTC")


def test_get_objects_lists_table_and_columns(conn, orders):
    objects = conn.adbc_get_objects(
        depth="all", catalog_filter="kafka", db_schema_filter="default", table_name_filter=orders["table"]
    ).read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["kafka"]
    schemas = objects[0]["catalog_db_schemas"]
    assert [s["db_schema_name"] for s in schemas] == ["default"]
    tables = schemas[0]["db_schema_tables"]
    assert [t["table_name"] for t in tables] == [orders["table"]]
    columns = [c["column_name"] for c in tables[0]["table_columns"]]
    assert columns == [
        "_partition", "_offset", "_timestamp", "_key", "_headers", "id", "customer", "amount", "_error", "_value"
    ]


def test_raw_topic_is_listed_too(conn, orders):
    objects = conn.adbc_get_objects(depth="tables", catalog_filter="kafka").read_all().to_pylist()
    names = {t["table_name"] for s in objects[0]["catalog_db_schemas"] for t in s["db_schema_tables"]}
    assert orders["table"] in names and orders["topic"] in names


def test_get_table_schema(conn, orders):
    schema = conn.adbc_get_table_schema(orders["topic"], catalog_filter="kafka", db_schema_filter="default")
    assert schema.names == ["_partition", "_offset", "_timestamp", "_key", "_value", "_headers"]
    assert schema.field("_key").type == pa.binary()
    assert schema.field("_headers").type == pa.list_(
        pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())])
    )
    assert schema.field("_timestamp").type == pa.timestamp("us", tz="UTC")
    assert not schema.field("_offset").nullable


def test_table_types(conn):
    # Lower case, as ADBC's drivers and SQLAlchemy's ADBC dialect use them.
    types = conn.adbc_get_table_types()
    assert types == ["table", "view"]


def test_bad_sql_fails_with_a_useful_message(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as excinfo:
            cur.execute("SELEC 1")
    assert "SELEC" in str(excinfo.value)


def test_unknown_table_is_named_in_the_error(conn):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as excinfo:
            cur.execute("SELECT * FROM no_such_topic_xyz")
    assert "no_such_topic_xyz" in str(excinfo.value)


def test_explicit_prepare_then_execute(conn, orders):
    with conn.cursor() as cur:
        sql = f"SELECT id, customer FROM {orders['table']} WHERE _error IS NULL ORDER BY id LIMIT 3"
        parameters = cur.adbc_prepare(sql)
        assert len(parameters) == 0
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    assert table.column("id").to_pylist() == [0, 1, 2]
    assert table.schema.field("customer").type == pa.string()
