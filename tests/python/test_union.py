"""One source of truth: a table with a lake tier reads as the union of the lake (below each
partition's watermark) and Kafka (from it on), exact at the seam, and keeps serving history that
Kafka has deleted."""

import adbc_driver_flightsql.dbapi as flightsql
from deltalake import DeltaTable

from conftest import Gateway, delete_records, produce
from test_compactor import PARTITIONS, compactor, offsets_of, orders, table  # noqa: F401 (fixture)


def query(gateway, sql):
    with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def test_lake_and_kafka_read_as_one_table_exact_at_the_seam(brokers, table):
    produce(brokers, table["topic"], orders(300))
    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s", "--max-records-per-commit", "100")
    assert run.returncode == 0, run.stderr
    produce(brokers, table["topic"], orders(90, start=300))  # only in Kafka
    watermarks = {
        p: DeltaTable(str(table["path"])).transaction_version(f"kappa/{table['name']}/{p}") for p in range(PARTITIONS)
    }
    assert all(w > 0 for w in watermarks.values())

    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    try:
        name = table["name"]
        rows = query(gateway, f"SELECT _partition, _offset, id, _error FROM {name}").to_pylist()
        keys = sorted((r["_partition"], r["_offset"]) for r in rows)
        assert len(keys) == len(set(keys)) == 390, "every offset once, from the lake or from Kafka"
        for p, (low, high) in offsets_of(brokers, table["topic"]).items():
            assert sorted(o for q, o in keys if q == p) == list(range(low, high))
        ids = sorted(r["id"] for r in rows if r["id"] is not None)
        assert ids == sorted(i for i in range(390) if i not in (150, 300 + 45))

        # The seam: the last tiered offset and the first one still only in Kafka, side by side.
        p0 = watermarks[0]
        seam = query(gateway, f"SELECT _offset FROM {name} WHERE _partition = 0 AND _offset BETWEEN {p0 - 2} AND {p0 + 1} ORDER BY 1")
        assert seam.column("_offset").to_pylist() == [p0 - 2, p0 - 1, p0, p0 + 1]

        # system.partitions shows how far each partition is tiered.
        tiered = query(
            gateway,
            f"SELECT partition, lake_watermark FROM system.partitions WHERE topic = '{table['topic']}' ORDER BY 1",
        ).to_pylist()
        assert tiered == [{"partition": p, "lake_watermark": watermarks[p]} for p in range(PARTITIONS)]

        # The lake's rows have the table's schema, so both sides stream as one.
        whole = query(gateway, f"SELECT * FROM {name} ORDER BY _partition, _offset")
        assert whole.num_rows == 390
        assert whole.schema.field("_headers").type.value_type.field(0).name == "key"

        # Kafka deletes what was tiered: history is still there, from the lake.
        delete_records(brokers, table["topic"], 0, p0)
        after = query(gateway, f"SELECT count(*) AS n, count(DISTINCT (_partition, _offset)) AS d FROM {name}").to_pylist()
        assert after == [{"n": 390, "d": 390}]

        plan = query(gateway, f"EXPLAIN SELECT * FROM {name} WHERE _partition = 0").column("plan").to_pylist()
        text = "\n".join(plan)
        assert "DeltaScanExec" in text and f"ranges=[p0:{p0}.." in text, text
    finally:
        gateway.stop()


def test_history_deleted_before_it_was_tiered_fails_the_queries_that_ask_for_it(brokers, table):
    produce(brokers, table["topic"], orders(60))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    produce(brokers, table["topic"], orders(60, start=60))
    # Partition 1 loses 5 records that were never tiered (its watermark is 20).
    delete_records(brokers, table["topic"], 1, 25)

    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    try:
        name = table["name"]
        try:
            query(gateway, f"SELECT count(*) FROM {name}")
            raise AssertionError("a query over the gap returned an answer")
        except flightsql.Error as e:
            assert "partition 1: offsets 20..25" in str(e), str(e)
        # Queries that do not need the lost offsets still work.
        assert query(gateway, f"SELECT count(*) AS n FROM {name} WHERE _partition <> 1").to_pylist() == [{"n": 80}]
        assert query(gateway, f"SELECT count(*) AS n FROM {name} WHERE _partition = 1 AND _offset >= 25").to_pylist() == [{"n": 15}]
    finally:
        gateway.stop()


def test_a_definition_changed_since_tiering_is_refused_not_misread(brokers, table):
    produce(brokers, table["topic"], orders(30))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    # A column added to the definition after the lake was written.
    changed = table["config"].read_text().replace("amount DOUBLE", "amount DOUBLE, note VARCHAR")
    gateway = Gateway(brokers, changed, ["--lake", str(table["lake"])])
    try:
        try:
            query(gateway, f"SELECT * FROM {table['name']}")
            raise AssertionError("the lake was read with a definition it was not written with")
        except flightsql.Error as e:
            assert "column 'note' is not in its lake table" in str(e), str(e)
    finally:
        gateway.stop()
