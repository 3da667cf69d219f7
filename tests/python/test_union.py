"""One source of truth: a table with a lake tier reads as the union of the lake (below each
partition's watermark) and Kafka (from it on), exact at the seam, and keeps serving history that
Kafka has deleted."""

import datetime
import os

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


def query_with(gateway, sql, **headers):
    """`sql` with `kappa.*` settings sent as call headers on the connection, as ADBC users do."""
    options = {f"adbc.flight.sql.rpc.call_header.{k}": v for k, v in headers.items()}
    with flightsql.connect(gateway.uri, db_kwargs=options, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def test_allow_gaps_lets_a_query_through_a_gap_from_adbc(brokers, table):
    produce(brokers, table["topic"], orders(60))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    produce(brokers, table["topic"], orders(60, start=60))
    delete_records(brokers, table["topic"], 1, 25)  # partition 1 loses offsets 20..25, never tiered

    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    try:
        name = table["name"]
        sql = f"SELECT count(*) AS n FROM {name}"
        # Per connection: the setting travels with every call of the connection.
        assert query_with(gateway, sql, **{"kappa.allow_gaps": "true"}).to_pylist() == [{"n": 115}]
        # Per statement, on a connection without it.
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.adbc_statement.set_options(**{"adbc.flight.sql.rpc.call_header.kappa.allow_gaps": "true"})
            cur.execute(sql)
            assert cur.fetch_arrow_table().to_pylist() == [{"n": 115}]
        # Off again: the gap is an error, named.
        try:
            query_with(gateway, sql, **{"kappa.allow_gaps": "false"})
            raise AssertionError("allow_gaps=false let the gap through")
        except flightsql.Error as e:
            assert "partition 1: offsets 20..25" in str(e), str(e)
        # A misspelt setting is refused, not ignored.
        try:
            query_with(gateway, sql, **{"kappa.allow_gapz": "true"})
            raise AssertionError("an unknown setting was accepted")
        except flightsql.ProgrammingError as e:
            assert "allow_gapz" in str(e), str(e)
    finally:
        gateway.stop()


def test_a_query_wholly_below_the_watermarks_needs_no_broker(brokers, table, tmp_path):
    produce(brokers, table["topic"], orders(90))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    watermarks = {
        p: DeltaTable(str(table["path"])).transaction_version(f"kappa/{table['name']}/{p}") for p in range(PARTITIONS)
    }
    expected = query_lake_offsets(table, watermarks)

    # A gateway whose broker is down (nothing listens on its address).
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    gateway = Gateway(dead, table["config"].read_text(),
                      ["--lake", str(table["lake"]), "--kafka-request-timeout", "2s"])
    try:
        name = table["name"]
        low = min(watermarks.values())
        rows = query(
            gateway,
            f"SELECT _partition, _offset, id FROM {name} WHERE _partition IN (0, 1, 2) AND _offset < {low} "
            "ORDER BY 1, 2",
        ).to_pylist()
        assert [(r["_partition"], r["_offset"], r["id"]) for r in rows] == [
            k for k in expected if k[1] < low
        ]
        # Without a partition filter Kafka must say which partitions exist: a clear error, in bounded time.
        try:
            query(gateway, f"SELECT count(*) FROM {name} WHERE _offset < {low}")
            raise AssertionError("answered without knowing the partitions")
        except flightsql.Error as e:
            assert "broker" in str(e).lower() or "unavailable" in str(e).lower(), str(e)
    finally:
        gateway.stop()


def query_lake_offsets(table, watermarks):
    dt = DeltaTable(str(table["path"]))
    rows = dt.to_pyarrow_table(columns=["_partition", "_offset", "id"]).to_pylist()
    return sorted((r["_partition"], r["_offset"], r["id"]) for r in rows)


def test_system_tables_and_explain_show_both_tiers(brokers, table):
    produce(brokers, table["topic"], orders(300))
    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s", "--max-records-per-commit", "100")
    assert run.returncode == 0, run.stderr
    produce(brokers, table["topic"], orders(30, start=300))  # only in Kafka
    dt = DeltaTable(str(table["path"]))
    name = table["name"]
    watermarks = {p: dt.transaction_version(f"kappa/{name}/{p}") for p in range(PARTITIONS)}

    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    try:
        # Listing tables reads no system table but shows all three.
        listed = query(gateway, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'system'")
        assert sorted(listed.column("table_name").to_pylist()) == ["compactions", "lake_files", "partitions", "streams"]

        parts = query(
            gateway,
            "SELECT partition, high_watermark, lake_watermark, lake_lag_records, lake_lag_seconds "
            f"FROM system.partitions WHERE topic = '{table['topic']}' ORDER BY 1",
        ).to_pylist()
        for row in parts:
            p = row["partition"]
            assert row["lake_watermark"] == watermarks[p]
            assert row["lake_lag_records"] == row["high_watermark"] - watermarks[p] == 10
            assert 0 <= row["lake_lag_seconds"] < 600, row

        files = query(
            gateway,
            f"SELECT path, partition_values, min_offset, max_offset, rows, bytes, modified FROM system.lake_files "
            f"WHERE \"table\" = '{name}'",
        ).to_pylist()
        assert sorted(f["path"] for f in files) == sorted(
            p.rsplit("/tables/" + name + "/", 1)[-1] for p in dt.file_uris()
        )
        assert sum(f["rows"] for f in files) == 300
        assert all(f["partition_values"].startswith("_date=") and f["bytes"] > 0 for f in files)
        assert max(f["max_offset"] for f in files) == max(watermarks.values()) - 1
        # Written by the compactor a moment ago (Delta's modificationTime is in milliseconds).
        now = datetime.datetime.now(datetime.timezone.utc)
        assert all(abs((now - f["modified"]).total_seconds()) < 600 for f in files), files

        commits = query(
            gateway,
            f"SELECT version, operation, records, files, watermarks FROM system.compactions "
            f"WHERE \"table\" = '{name}' ORDER BY version DESC",
        ).to_pylist()
        assert [c["version"] for c in commits] == list(range(dt.version(), -1, -1))
        assert sum(c["records"] for c in commits) == 300
        assert commits[0]["watermarks"] == ",".join(f"{p}:{watermarks[p]}" for p in range(PARTITIONS))
        assert commits[0]["operation"] == "WRITE" and commits[0]["files"] >= 1

        # EXPLAIN shows the lake part (version, watermarks) and the Kafka part (ranges) apart.
        def explain(sql):
            return "\n".join(query(gateway, "EXPLAIN " + sql).column("plan").to_pylist())

        both = explain(f"SELECT * FROM {name}")
        below = ", ".join(f"p{p}:{watermarks[p]}" for p in range(PARTITIONS))
        assert f"LakeTierExec: table={name}, version={dt.version()}, below=[{below}]" in both, both
        assert f"ranges=[p0:{watermarks[0]}..{watermarks[0] + 10}" in both, both
        # Wholly above the watermarks: no lake file is planned.
        above = explain(f"SELECT * FROM {name} WHERE _offset >= {max(watermarks.values())}")
        assert "LakeTierExec" not in above and "KafkaScanExec" in above, above
        # Wholly below, partitions named: Kafka is not part of the plan.
        lake_only = explain(f"SELECT * FROM {name} WHERE _partition = 0 AND _offset < {watermarks[0]}")
        assert "LakeTierExec" in lake_only and "KafkaScanExec" not in lake_only, lake_only
    finally:
        gateway.stop()


def test_limit_and_last_records_across_the_seam(brokers, table):
    produce(brokers, table["topic"], orders(90))
    # Three files per partition in the lake, ten records each.
    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s", "--max-records-per-commit", "10")
    assert run.returncode == 0, run.stderr
    files = DeltaTable(str(table["path"])).file_uris()
    assert len(files) == 3 * PARTITIONS, files
    produce(brokers, table["topic"], orders(6, start=90))  # 2 per partition above the watermarks
    name = table["name"]
    w0 = DeltaTable(str(table["path"])).transaction_version(f"kappa/{name}/0")
    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    try:
        # The newest 5 of partition 0: 2 from Kafka, 3 from the lake.
        last = query(gateway, f"SELECT _offset FROM {name} WHERE _partition = 0 ORDER BY _offset DESC LIMIT 5")
        assert last.column("_offset").to_pylist() == [w0 + 1, w0, w0 - 1, w0 - 2, w0 - 3]
        # Without a filter between them, the Kafka side of the union reads only its tail.
        plan = "\n".join(query(
            gateway, f"EXPLAIN SELECT _offset FROM {name} ORDER BY _offset DESC LIMIT 5"
        ).column("plan").to_pylist())
        assert "last=5 per partition" in plan and "LakeTierExec" in plan, plan
        # A filter on _partition alone keeps each partition whole: still only the tail is read.
        analyzed = "\n".join(query(
            gateway, f"EXPLAIN ANALYZE SELECT _offset FROM {name} WHERE _partition = 0 ORDER BY _offset DESC LIMIT 5"
        ).column("plan").to_pylist())
        assert "last=5 per partition" in analyzed and "records_fetched=2," in analyzed, analyzed
        # The lake side reads only the file holding partition 0's newest records (its 3 newest in the lake).
        assert "last=5 per partition, files=1 of 3" in analyzed and "files_opened=1," in analyzed, analyzed
        # With no filter, the newest file of each partition.
        analyzed = "\n".join(query(
            gateway, f"EXPLAIN ANALYZE SELECT _offset FROM {name} ORDER BY _offset DESC LIMIT 5"
        ).column("plan").to_pylist())
        assert f"files={PARTITIONS} of {3 * PARTITIONS}" in analyzed, analyzed
        assert f"files_opened={PARTITIONS}," in analyzed, analyzed
        # More than the Kafka tail and the newest file hold: older files too, and the answer is exact.
        deep = query(gateway, f"SELECT _offset FROM {name} WHERE _partition = 0 ORDER BY _offset DESC LIMIT 25")
        assert deep.column("_offset").to_pylist() == list(range(w0 + 1, w0 - 24, -1))
        analyzed = "\n".join(query(
            gateway, f"EXPLAIN ANALYZE SELECT _offset FROM {name} WHERE _partition = 0 ORDER BY _offset DESC LIMIT 25"
        ).column("plan").to_pylist())
        assert "files=3 of 3" in analyzed and "files_opened=3," in analyzed, analyzed
        # Any other filter may drop the newest records: the whole range is read.
        other = "\n".join(query(
            gateway, f"EXPLAIN SELECT _offset FROM {name} WHERE _partition = 0 AND id > 1 ORDER BY _offset DESC LIMIT 5"
        ).column("plan").to_pylist())
        assert "last=" not in other, other
        # Newest across partitions, and a plain LIMIT, each exact.
        top = query(gateway, f"SELECT _partition, _offset FROM {name} ORDER BY _offset DESC, _partition LIMIT 4")
        everything = query(gateway, f"SELECT _partition, _offset FROM {name}").to_pylist()
        expected = sorted(everything, key=lambda r: (-r["_offset"], r["_partition"]))[:4]
        assert top.to_pylist() == expected
        some = query(gateway, f"SELECT _partition, _offset FROM {name} LIMIT 7").to_pylist()
        assert len(some) == 7 and len({(r["_partition"], r["_offset"]) for r in some}) == 7
        assert all(r in everything for r in some)
    finally:
        gateway.stop()


def test_the_newest_records_are_exact_for_any_count_filter_and_file_layout(brokers, table):
    """`ORDER BY _offset DESC LIMIT n` reads each partition's Kafka tail and only the lake files that can hold
    its newest `n` (by the files' statistics): checked against a full read for random counts and partition
    filters, with a log start above 0, files of random sizes, and after OPTIMIZE rewrote them."""
    import random

    from test_maintenance import maintain

    seed = int(os.environ.get("KAPPA_UNION_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    produce(brokers, table["topic"], orders(240))
    delete_records(brokers, table["topic"], 1, 9)
    for _ in range(3):  # files of random sizes
        run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s",
                        "--max-records-per-commit", str(rng.randint(3, 40)))
        assert run.returncode == 0, run.stderr
        produce(brokers, table["topic"], orders(rng.randint(0, 30), start=1000))
    name = table["name"]
    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    filters = {"": {0, 1, 2}, "WHERE _partition = 0": {0}, "WHERE _partition = 1": {1},
               "WHERE _partition IN (0, 2)": {0, 2}}
    try:
        def check(what):
            everything = query(gateway, f"SELECT _partition, _offset FROM {name}").to_pylist()
            for _ in range(12):
                n, where = rng.randint(1, 120), rng.choice(sorted(filters))
                keep = [r for r in everything if r["_partition"] in filters[where]]
                want = sorted(keep, key=lambda r: (-r["_offset"], -r["_partition"]))[:n]
                sql = f"SELECT _partition, _offset FROM {name} {where} ORDER BY _offset DESC, _partition DESC LIMIT {n}"
                assert query(gateway, sql).to_pylist() == want, f"seed {seed}, {what}: {sql}"
            plan = "\n".join(query(gateway, f"EXPLAIN SELECT _offset FROM {name} ORDER BY _offset DESC LIMIT 3")
                             .column("plan").to_pylist())
            assert "last=3 per partition, files=" in plan, plan

        check("as tiered")
        assert maintain("optimize", table).returncode == 0
        check("after OPTIMIZE")
    finally:
        gateway.stop()


def test_a_lake_table_deleted_and_tiered_again_is_read_afresh(brokers, table):
    import shutil

    produce(brokers, table["topic"], orders(60))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    gateway = Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])
    try:
        sql = f"SELECT count(*) AS n, count(DISTINCT (_partition, _offset)) AS d FROM {table['name']}"
        assert query(gateway, sql).to_pylist() == [{"n": 60, "d": 60}]
        version = DeltaTable(str(table["path"])).version()
        # The same name and the same version number, but other files.
        shutil.rmtree(table["path"])
        assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
        assert DeltaTable(str(table["path"])).version() == version
        assert query(gateway, sql).to_pylist() == [{"n": 60, "d": 60}]
        # Deleted: Kafka alone serves the table.
        shutil.rmtree(table["path"])
        assert query(gateway, sql).to_pylist() == [{"n": 60, "d": 60}]
        assert "LakeTierExec" not in "\n".join(query(gateway, f"EXPLAIN {sql}").column("plan").to_pylist())
    finally:
        gateway.stop()
