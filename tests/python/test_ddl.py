"""Tables defined by SQL: CREATE EXTERNAL TABLE … STORED AS KAFKA and DROP TABLE through the real gateway
binary, the definitions kept on the lake (a local folder) and shared by every gateway and the compactor on
it, across restarts; refused statements; the `define` grant."""

import concurrent.futures
import decimal
import json
import os
import subprocess
import time

import adbc_driver_flightsql.dbapi as flightsql
import pytest
from deltalake import DeltaTable

from conftest import Gateway, create_topic, hash_password, produce, unique
from test_compactor import compactor, s3  # noqa: F401 (s3 is a fixture)

REFRESH = "1s"


def query(gateway, sql, **db_kwargs):
    with flightsql.connect(gateway.uri, db_kwargs=db_kwargs or None, autocommit=True) as conn, \
            conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def refused(gateway, sql, **db_kwargs):
    """The message of the error `sql` fails with."""
    with pytest.raises(flightsql.Error) as failed:
        query(gateway, sql, **db_kwargs)
    return str(failed.value)


def eventually(check, seconds=15):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (AssertionError, flightsql.Error):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture()
def orders_topic(brokers):
    topic = unique("ddl-orders")
    create_topic(brokers, topic, partitions=1)
    values = [json.dumps({"id": i, "customer": f"c{i}", "amount": f"{i}.25"}).encode() for i in range(6)]
    values.insert(3, b"{poison")
    produce(brokers, topic, [{"partition": 0, "value": v} for v in values])
    return topic


def create_orders(topic, name=None):
    return (f'CREATE EXTERNAL TABLE "{name or topic}" (id BIGINT, customer VARCHAR, amount DECIMAL(10, 2)) '
            f"STORED AS KAFKA LOCATION '{topic}' OPTIONS ('value.format' 'json', 'timestamp_skew' '5s')")


def typed_rows(gateway, name):
    return query(gateway, f'SELECT id, customer, amount, _error FROM "{name}" ORDER BY _offset').to_pylist()


def check_typed(rows):
    good = [r for r in rows if r["_error"] is None]
    assert [r["id"] for r in good] == list(range(6)), rows
    assert good[2] == {"id": 2, "customer": "c2", "amount": decimal.Decimal("2.25"), "_error": None}
    assert sum(r["_error"] is not None for r in rows) == 1, "the poison value is a row with _error"


def test_a_table_created_by_sql_is_on_every_gateway_and_survives_a_restart(brokers, orders_topic, tmp_path):
    lake = tmp_path / "lake"
    args = ["--lake", str(lake), "--topic-refresh", REFRESH]
    first, second = Gateway(brokers, extra_args=args), Gateway(brokers, extra_args=args)
    try:
        # The topic reads raw until a definition types it, under the topic's own name.
        assert "id" not in query(second, f'SELECT * FROM "{orders_topic}"').schema.names
        assert query(first, create_orders(orders_topic)).num_rows == 0
        check_typed(typed_rows(first, orders_topic))
        stored = json.loads((lake / "_kappa" / "tables" / f"{orders_topic}.json").read_text())
        assert stored["definition"]["topic"] == orders_topic and stored["created_by"] == "anonymous", stored

        # Another gateway on the lake sees it within its refresh interval.
        eventually(lambda: check_typed(typed_rows(second, orders_topic)))
        tables = query(second, "SHOW TABLES").to_pylist()
        assert any(t["table_name"] == orders_topic for t in tables), tables
        described = {r["column_name"]: r["data_type"] for r in query(second, f'DESCRIBE "{orders_topic}"').to_pylist()}
        assert described["amount"] == "Decimal128(10, 2)" and described["customer"] == "Utf8", described
        shown = query(second, f"SHOW CREATE TABLE \"{orders_topic}\"").to_pylist()
        assert len(shown) == 1, shown
        statement = shown[0]["definition"]
        assert statement.startswith(f'CREATE EXTERNAL TABLE "{orders_topic}" (id BIGINT'), statement
        assert f"LOCATION '{orders_topic}'" in statement and "'value.format' 'json'" in statement, statement
        # The statement shown makes the same table.
        again = statement.replace(f'"{orders_topic}"', '"copy_of_orders"', 1)
        query(second, again)
        check_typed(typed_rows(second, "copy_of_orders"))

        # A restarted gateway reads the definitions from the lake.
        first.stop()
        first = Gateway(brokers, extra_args=args)
        check_typed(typed_rows(first, orders_topic))

        # Dropped on one gateway: the topic is raw again on the other, and the topic itself remains.
        query(second, f'DROP TABLE "{orders_topic}"')
        assert "id" not in query(second, f'SELECT * FROM "{orders_topic}"').schema.names
        eventually(lambda: _raw(first, orders_topic))
        assert not (lake / "_kappa" / "tables" / f"{orders_topic}.json").exists()
    finally:
        first.stop()
        second.stop()


def _raw(gateway, name):
    table = query(gateway, f'SELECT * FROM "{name}"')
    assert "id" not in table.schema.names and table.num_rows == 7, table.schema.names


def test_two_gateways_creating_tables_at_once_lose_nothing(brokers, orders_topic, tmp_path):
    args = ["--lake", str(tmp_path / "lake"), "--topic-refresh", REFRESH]
    gateways = [Gateway(brokers, extra_args=args), Gateway(brokers, extra_args=args)]
    try:
        names = [f"t{i}" for i in range(8)]
        jobs = [(gateways[i % 2], create_orders(orders_topic, name)) for i, name in enumerate(names)]
        # Both gateways also create one name at once: exactly one wins.
        jobs += [(gateway, create_orders(orders_topic, "contested")) for gateway in gateways]

        def run(job):
            try:
                query(*job)
                return "created"
            except flightsql.Error as e:
                return str(e)

        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            outcomes = list(pool.map(run, jobs))
        assert outcomes[:8] == ["created"] * 8, outcomes
        contested = outcomes[8:]
        assert contested.count("created") == 1, contested
        lost = next(o for o in contested if o != "created")
        assert "already exists" in lost and ("AlreadyExists" in lost or "ALREADY_EXISTS" in lost), lost

        for gateway in gateways:
            def listed(gateway=gateway):
                shown = {t["table_name"] for t in query(gateway, "SHOW TABLES").to_pylist()}
                assert set(names) | {"contested"} <= shown, shown
            eventually(listed)
            check_typed(typed_rows(gateway, "t7"))
    finally:
        for gateway in gateways:
            gateway.stop()


def test_what_kappa_does_not_define_is_refused_with_the_reason(brokers, orders_topic, tmp_path):
    config = f'[[tables]]\nname = "from_file"\ntopic = "{orders_topic}"\nformat = "raw"\n'
    gateway = Gateway(brokers, config, extra_args=["--lake", str(tmp_path / "lake")])
    try:
        for sql, code, why in [
            ("CREATE EXTERNAL TABLE f STORED AS CSV LOCATION '/etc/passwd'", "InvalidArgument", "STORED AS CSV"),
            ("CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION 's3://bucket/x'", "InvalidArgument",
             "STORED AS PARQUET"),
            ("COPY (SELECT 1) TO '/tmp/kappa-copy.csv'", "InvalidArgument", ""),
            ("CREATE VIEW v AS SELECT 1", "InvalidArgument", ""),
            (f"CREATE EXTERNAL TABLE x (id BIGINT) STORED AS KAFKA LOCATION '{orders_topic}'",
             "InvalidArgument", "'value.format'"),
            (f"CREATE EXTERNAL TABLE x (id NOSUCHTYPE) STORED AS KAFKA LOCATION '{orders_topic}' "
             "OPTIONS ('value.format' 'json')", "InvalidArgument", ""),
            (f"CREATE EXTERNAL TABLE from_file STORED AS KAFKA LOCATION '{orders_topic}' "
             "OPTIONS ('value.format' 'raw')", "AlreadyExists", "already exists"),
            ("DROP TABLE from_file", "InvalidArgument", "config file"),
            (f'DROP TABLE "{orders_topic}"', "NotFound", "never deletes topics"),
            ("DROP TABLE no_such_table", "NotFound", "does not exist"),
        ]:
            message = refused(gateway, sql)
            assert code in message or code.upper() in message.replace("_", ""), (sql, message)
            assert why in message, (sql, message)
        query(gateway, "DROP TABLE IF EXISTS no_such_table")
        query(gateway, f"CREATE EXTERNAL TABLE IF NOT EXISTS from_file STORED AS KAFKA LOCATION '{orders_topic}' "
                       "OPTIONS ('value.format' 'raw')")
        query(gateway, create_orders(orders_topic, "twice"))
        assert "already exists" in refused(gateway, create_orders(orders_topic, "twice"))
        query(gateway, create_orders(orders_topic, "twice").replace("TABLE", "TABLE IF NOT EXISTS", 1))
        # ADBC's execute_update reaches the same path.
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_statement.set_sql_query('DROP TABLE "twice"')
            cur.adbc_statement.execute_update()
        assert "does not exist" in refused(gateway, 'DROP TABLE "twice"')
    finally:
        gateway.stop()


def test_defining_tables_needs_the_define_grant(brokers, orders_topic, tmp_path):
    users = tmp_path / "users.toml"
    users.write_text(
        f'[[users]]\nname = "analyst"\npassword_hash = "{hash_password("a")}"\ntables = ["*"]\n\n'
        f'[[users]]\nname = "owner"\npassword_hash = "{hash_password("o")}"\ntables = ["*"]\n'
        f'define = ["sandbox_*"]\n')
    gateway = Gateway(brokers, extra_args=["--lake", str(tmp_path / "lake"), "--users", str(users)])
    try:
        message = refused(gateway, create_orders(orders_topic, "sandbox_a"), username="analyst", password="a")
        assert "PermissionDenied" in message or "PERMISSION_DENIED" in message, message
        message = refused(gateway, create_orders(orders_topic, "prod"), username="owner", password="o")
        assert "may not create or drop table 'prod'" in message, message
        query(gateway, create_orders(orders_topic, "sandbox_a"), username="owner", password="o")
        check_typed(query(gateway, "SELECT id, customer, amount, _error FROM sandbox_a ORDER BY _offset",
                          username="analyst", password="a").to_pylist())
        assert "PermissionDenied" in refused(gateway, "DROP TABLE sandbox_a", username="analyst", password="a")
        query(gateway, "DROP TABLE sandbox_a", username="owner", password="o")
        stored = tmp_path / "lake" / "_kappa" / "tables"
        assert not any(stored.iterdir())
    finally:
        gateway.stop()


def test_the_compactor_tiers_a_table_defined_by_sql(brokers, orders_topic, tmp_path):
    lake = tmp_path / "lake"
    gateway = Gateway(brokers, extra_args=["--lake", str(lake)])
    try:
        query(gateway, create_orders(orders_topic, "orders_by_sql"))
        config = tmp_path / "empty.toml"
        config.write_text("")
        run = compactor(brokers, lake, config, "--tier-after", "0s")
        assert run.returncode == 0, run.stderr
        assert "orders_by_sql" in run.stdout, run.stdout
        tier = DeltaTable(str(lake / "tables" / "orders_by_sql")).to_pyarrow_table()
        assert str(tier.schema.field("amount").type) == "decimal128(10, 2)", tier.schema
        lake_rows = sorted(tier.to_pylist(), key=lambda r: r["_offset"])
        check_typed([{k: r[k] for k in ("id", "customer", "amount", "_error")} for r in lake_rows])
        plan = str(query(gateway, "EXPLAIN SELECT * FROM orders_by_sql").to_pylist())
        assert "LakeTierExec" in plan, plan
        check_typed(typed_rows(gateway, "orders_by_sql"))
    finally:
        gateway.stop()


def test_definitions_on_an_s3_lake_are_created_once(brokers, orders_topic, s3):
    """On an object store (moto's S3 server), two gateways creating one name at once: the conditional put
    lets exactly one win, and both serve the table."""
    env = dict(os.environ, **s3["options"])
    args = ["--lake", "s3://lake/kappa", "--topic-refresh", REFRESH]
    gateways = [Gateway(brokers, extra_args=args, env=env) for _ in range(2)]
    try:
        def run(gateway):
            try:
                query(gateway, create_orders(orders_topic, "on_s3"))
                return "created"
            except flightsql.Error as e:
                return str(e)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(run, gateways))
        assert outcomes.count("created") == 1, outcomes
        assert any("already exists" in o for o in outcomes), outcomes
        for gateway in gateways:
            eventually(lambda gateway=gateway: check_typed(typed_rows(gateway, "on_s3")))
        listed = s3["client"].list_objects_v2(Bucket="lake", Prefix="kappa/_kappa/tables/")
        assert [o["Key"] for o in listed["Contents"]] == ["kappa/_kappa/tables/on_s3.json"], listed
    finally:
        for gateway in gateways:
            gateway.stop()


def test_import_trino_turns_table_descriptions_into_tables(brokers, tmp_path):
    """`kappa-gateway import-trino --apply` reads a Trino Kafka table-description file and stores the
    equivalent definition: its JSON mappings become columns (a nested mapping a STRUCT)."""
    topic = unique("trino-orders")
    create_topic(brokers, topic, partitions=1)
    produce(brokers, topic, [{"partition": 0, "value": json.dumps(
        {"rowNumber": i, "totalPrice": f"{i}.50", "address": {"city": f"city{i}"}}).encode()} for i in range(3)])
    description = tmp_path / "orders.json"
    description.write_text(json.dumps({
        "tableName": "trino_orders", "schemaName": "tpch", "topicName": topic,
        "key": {"dataFormat": "raw", "fields": [{"name": "kafka_key", "dataFormat": "LONG", "type": "BIGINT"}]},
        "message": {"dataFormat": "json", "fields": [
            {"name": "row_number", "mapping": "rowNumber", "type": "BIGINT"},
            {"name": "total_price", "mapping": "totalPrice", "type": "DECIMAL(12,2)"},
            {"name": "city", "mapping": "address/city", "type": "VARCHAR"}]}}))
    broken = tmp_path / "broken.json"
    broken.write_text('{"tableName": "x", "topicName": "x", "message": {"dataFormat": "csv", "fields": []}}')
    lake = tmp_path / "lake"
    binary = os.environ["KAPPA_GATEWAY_BIN"]
    printed = subprocess.run([binary, "import-trino", str(description)], capture_output=True, text=True,
                             timeout=30)
    assert printed.returncode == 0, printed.stderr
    assert (f'CREATE EXTERNAL TABLE trino_orders ("rowNumber" BIGINT, "totalPrice" DECIMAL(12,2), '
            f"\"address\" STRUCT<\"city\" VARCHAR>) STORED AS KAFKA LOCATION '{topic}'") in printed.stdout, \
        printed.stdout
    assert not lake.exists(), "without --apply nothing is stored"

    applied = subprocess.run([binary, "import-trino", "--apply", "--lake", str(lake), str(description), str(broken)],
                             capture_output=True, text=True, timeout=30)
    assert applied.returncode != 0 and "dataFormat 'csv'" in applied.stderr, applied.stderr
    assert "-- created trino_orders" in applied.stdout, applied.stdout
    gateway = Gateway(brokers, extra_args=["--lake", str(lake)])
    try:
        rows = query(gateway, "SELECT \"rowNumber\", \"totalPrice\", address['city'] AS city FROM trino_orders "
                              "ORDER BY _offset").to_pylist()
        assert rows == [{"rowNumber": i, "totalPrice": decimal.Decimal(f"{i}.50"), "city": f"city{i}"}
                        for i in range(3)], rows
    finally:
        gateway.stop()


def test_json_columns_inferred_from_the_newest_records_are_pinned_in_the_definition(brokers, tmp_path):
    topic = unique("ddl-infer")
    create_topic(brokers, topic, partitions=2)
    old = [{"partition": p, "value": json.dumps({"id": i, "old_only": "x"}).encode()}
           for i in range(10) for p in (0, 1)]
    new = [{"partition": p, "value": json.dumps(
        {"id": 100 + i, "price": 1.5 * i, "tags": ["a"], "address": {"city": f"c{i}"}}).encode()}
        for i in range(4) for p in (0, 1)]
    produce(brokers, topic, old + new + [{"partition": 0, "value": b"not json"}])
    gateway = Gateway(brokers, extra_args=["--lake", str(tmp_path / "lake")])
    try:
        query(gateway, f"CREATE EXTERNAL TABLE inferred STORED AS KAFKA LOCATION '{topic}' "
                       "OPTIONS ('value.format' 'json', 'value.json.infer' 'true', 'value.json.infer.records' '4')")
        shown = query(gateway, "SHOW CREATE TABLE inferred").to_pylist()[0]["definition"]
        # The columns in the order fields first appear in the sample.
        assert ('("id" BIGINT, "price" DOUBLE, "tags" ARRAY<VARCHAR>, "address" STRUCT<"city" VARCHAR>)'
                in shown), shown
        assert "old_only" not in shown, "only the newest 4 records of each partition are sampled"
        produce(brokers, topic, [{"partition": 1, "value": json.dumps({"id": 999, "later": True}).encode()}])
        table = query(gateway, "SELECT * FROM inferred WHERE _partition = 1 ORDER BY _offset")
        assert "later" not in table.schema.names, "the columns were inferred once, not per query"
        rows = table.to_pylist()
        assert [r["id"] for r in rows] == list(range(10)) + [100, 101, 102, 103, 999], rows
        assert rows[11]["address"] == {"city": "c1"} and rows[11]["price"] == 1.5, rows[11]

        message = refused(gateway, f"CREATE EXTERNAL TABLE bad_infer (id BIGINT) STORED AS KAFKA LOCATION '{topic}' "
                                   "OPTIONS ('value.format' 'json', 'value.json.infer' 'true')")
        assert "given none" in message, message
    finally:
        gateway.stop()


def test_string_values_are_a_varchar_column(brokers, tmp_path):
    topic = unique("ddl-lines")
    create_topic(brokers, topic, partitions=1)
    produce(brokers, topic, [{"partition": 0, "value": v} for v in
                             (b"GET /index.html 200", "héllo".encode(), b"\xff\xfe", None)])
    gateway = Gateway(brokers, extra_args=["--lake", str(tmp_path / "lake")])
    try:
        query(gateway, f"CREATE EXTERNAL TABLE lines STORED AS KAFKA LOCATION '{topic}' "
                       "OPTIONS ('value.format' 'string')")
        query(gateway, f"CREATE EXTERNAL TABLE named_lines (line VARCHAR) STORED AS KAFKA LOCATION '{topic}' "
                       "OPTIONS ('value.format' 'string')")
        rows = query(gateway, "SELECT value, _error, _value FROM lines ORDER BY _offset").to_pylist()
        assert [r["value"] for r in rows] == ["GET /index.html 200", "héllo", None, None], rows
        assert rows[2]["_error"].startswith("not UTF-8 text") and rows[2]["_value"] == b"\xff\xfe", rows[2]
        assert rows[3]["_error"] is None, "a tombstone is a null, not an error"
        named = query(gateway, "SELECT split_part(line, ' ', 2) AS path FROM named_lines ORDER BY _offset LIMIT 1")
        assert named.to_pylist() == [{"path": "/index.html"}]
        message = refused(gateway, f"CREATE EXTERNAL TABLE two (a VARCHAR, b VARCHAR) STORED AS KAFKA "
                                   f"LOCATION '{topic}' OPTIONS ('value.format' 'string')")
        assert "one VARCHAR column" in message, message
    finally:
        gateway.stop()


def test_csv_values_read_into_declared_columns_and_tier(brokers, tmp_path):
    topic = unique("ddl-csv")
    create_topic(brokers, topic, partitions=1)
    produce(brokers, topic, [{"partition": 0, "value": v} for v in (
        b"1,alice,2.50,2026-01-01T10:00:00", b'2,"smith, bob",3.25,2026-01-02T11:30:00',
        b"x,carol,1.00,2026-01-03T00:00:00", b"4,dave")])
    lake = tmp_path / "lake"
    gateway = Gateway(brokers, extra_args=["--lake", str(lake)])
    try:
        query(gateway, f"CREATE EXTERNAL TABLE csv_orders (id BIGINT, name VARCHAR, price DECIMAL(9, 2), "
                       f"at TIMESTAMP) STORED AS KAFKA LOCATION '{topic}' OPTIONS ('value.format' 'csv')")
        rows = query(gateway, "SELECT id, name, price, _error FROM csv_orders ORDER BY _offset").to_pylist()
        assert rows[:2] == [{"id": 1, "name": "alice", "price": decimal.Decimal("2.50"), "_error": None},
                            {"id": 2, "name": "smith, bob", "price": decimal.Decimal("3.25"), "_error": None}], rows
        assert all(r["id"] is None and r["_error"].startswith("invalid CSV") for r in rows[2:]), rows
        config = tmp_path / "empty.toml"
        config.write_text("")
        run = compactor(brokers, lake, config, "--tier-after", "0s")
        assert run.returncode == 0, run.stderr
        tier = sorted(DeltaTable(str(lake / "tables" / "csv_orders")).to_pyarrow_table().to_pylist(),
                      key=lambda r: r["_offset"])
        assert [(r["id"], r["name"]) for r in tier] == [(1, "alice"), (2, "smith, bob"), (None, None), (None, None)]
    finally:
        gateway.stop()
