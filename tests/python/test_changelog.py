"""Changelog tables (issue 24, item 5): a topic of changes to keys read as each key's latest value.

`latest('t')` has the columns of table `t` and one row per key (the raw `_key` bytes, or the decoded
`key` where the table has a key format): the newest
record of that key. A tombstone (a null value) deletes its key; a key written again after one is back;
records with a null key are not part of it. `latest('t', <timestamp>)` is the state as of that time
(only records with `_timestamp <= t` count). A key seen in several partitions: within one partition
the higher offset wins, across partitions the later `_timestamp`, and on equal timestamps the higher
partition. A table declared with `'changelog' 'upsert'` (SQL) or `changelog = "upsert"` (TOML) reads
as `latest()` of itself.

Every answer is checked against a model of the log in Python (`Log`), built from the offsets the broker
acknowledged, over randomized keyed workloads (the seed is in every assertion message; set
KAPPA_CHANGELOG_SEED to replay one), from Kafka, from the lake tier below the compactor's watermarks,
while the compactor runs, after Kafka deleted tiered records, and under snapshot tokens."""

import json
import os
import random
import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import adbc_driver_flightsql.dbapi as flightsql
import pytest
from confluent_kafka.admin import AdminClient, NewPartitions
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from deltalake import DeltaTable

from conftest import DEADLINE_S, TLS_ROOT, Gateway, create_topic, delete_records, produce, unique
from test_compactor import PARTITIONS, compactor, offsets_of
from test_snapshots import assert_same_rows, flight, lake_gateway, query, refused, rows, take, tier, token_of
from test_tail import produce_acked

COLUMNS = "name VARCHAR, score BIGINT"
PROJECTION = "_key, _partition, _offset, name, score"
MINUTE_MS = 60 * 1000
HOUR_MS = 60 * MINUTE_MS
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# ---------------------------------------------------------------------------------------------
# The model


class Log:
    """The records of a topic as the broker acknowledged them: {(partition, offset): record}, where a
    record is a dict as conftest.produce takes (key, value, partition, timestamp in ms)."""

    def __init__(self):
        self.records = {}

    def add(self, acked):
        self.records.update(acked)
        return acked

    def winners(self, as_of_ms=None):
        """{key: (partition, offset, record)}: each key's newest record (a tombstone included), by the rule:
        in a partition the higher offset, across partitions the later timestamp, then the higher partition."""
        in_partition = {}
        for (p, o), r in self.records.items():
            if r.get("key") is None or (as_of_ms is not None and r["timestamp"] > as_of_ms):
                continue
            best = in_partition.get((r["key"], p))
            if best is None or o > best[0]:
                in_partition[(r["key"], p)] = (o, r)
        out = {}
        for (key, p), (o, r) in in_partition.items():
            best = out.get(key)
            if best is None or (r["timestamp"], p) > (best[2]["timestamp"], best[0]):
                out[key] = (p, o, r)
        return out

    def latest(self, as_of_ms=None):
        """The rows `SELECT _key, _partition, _offset, name, score FROM latest(t[, as_of]) ORDER BY _key`
        answers (with `_ts`, the timestamp in ms, which the comparisons leave out)."""
        out = []
        for key, (p, o, r) in sorted(self.winners(as_of_ms).items()):
            if r["value"] is None:
                continue
            value = json.loads(r["value"])
            out.append({"_key": key, "_partition": p, "_offset": o, "name": value["name"], "score": value["score"],
                        "_ts": r["timestamp"]})
        return out


def project(model_rows):
    return [{k: v for k, v in r.items() if k != "_ts"} for r in model_rows]


class Workload:
    """Random keyed records: `keys` keys, each with a home partition; `split` of them also written to a
    second partition. Values are JSON {"name", "score"}; a share are tombstones (so keys are deleted and
    written again), a few have a null key. Timestamps are distinct (no two records share one), increasing
    by `step_ms`, except a `skew` share that are older than the records before them in their partition."""

    def __init__(self, rng, keys=40, partitions=PARTITIONS, split=6):
        self.rng = rng
        self.keys = [f"user-{i:02d}".encode() for i in range(keys)]
        self.home = {k: rng.randrange(partitions) for k in self.keys}
        self.partitions = partitions
        self.other = {k: (self.home[k] + rng.randrange(1, partitions)) % partitions
                      for k in rng.sample(self.keys, split)}
        self.used = set()
        self.n = 0

    def timestamp(self, ms):
        while ms in self.used:
            ms += 1
        self.used.add(ms)
        return ms

    def value(self):
        self.n += 1
        return json.dumps({"name": f"n{self.n}", "score": self.rng.randrange(-1000, 1000)}).encode()

    def records(self, count, start_ms, step_ms=10, tombstones=0.15, null_keys=0.02, skew=0.0, skew_steps=100):
        rng, out = self.rng, []
        for i in range(count):
            ts = start_ms + i * step_ms
            if skew and rng.random() < skew:
                ts -= rng.randrange(1, skew_steps) * step_ms + step_ms // 2
            if rng.random() < null_keys:
                key, partition = None, rng.randrange(self.partitions)
            else:
                key = rng.choice(self.keys)
                partition = self.other[key] if key in self.other and rng.random() < 0.4 else self.home[key]
            value = None if rng.random() < tombstones else self.value()
            out.append({"partition": partition, "key": key, "value": value, "timestamp": self.timestamp(ts)})
        return out


def seeded():
    seed = int(os.environ.get("KAPPA_CHANGELOG_SEED") or time.time_ns() % 2**32)
    return seed, random.Random(seed)


def now_ms():
    return int(time.time() * 1000)


def ms_of(ts):
    """A `_timestamp` (a datetime in UTC, µs) in ms."""
    return (ts - EPOCH) // timedelta(milliseconds=1)


def sql_timestamp(ms):
    """`TIMESTAMP '2026-12-06 10:00:00.123'` (UTC) for a time in ms, exactly."""
    return "TIMESTAMP '" + (EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "'"


# ---------------------------------------------------------------------------------------------
# Checks


def describe(r):
    return {k: r[k] for k in ("_partition", "_offset", "name", "score") if k in r}


def compare(got, want, what):
    """`got` (rows of the gateway) equals `want` (the model's), naming the keys that differ."""
    if got == want:
        return
    got_by, want_by = {r["_key"]: r for r in got}, {r["_key"]: r for r in want}
    missing = sorted(set(want_by) - set(got_by))
    extra = sorted(set(got_by) - set(want_by))
    changed = [(k, describe(got_by[k]), describe(want_by[k])) for k in sorted(set(got_by) & set(want_by))
               if got_by[k] != want_by[k]]
    order = "" if missing or extra or changed or len(got) != len(got_by) else ", same rows in another order"
    raise AssertionError(
        f"{what}: {len(got)} rows ({len(got_by)} keys), expected {len(want)}{order}; "
        f"missing keys {[(k, describe(want_by[k])) for k in missing[:5]]}, "
        f"extra keys {[(k, describe(got_by[k])) for k in extra[:5]]}, "
        f"wrong rows (key, got, expected) {changed[:5]}")


def latest_sql(name, as_of=None, where="", columns=PROJECTION, tail="ORDER BY _key"):
    args = f"'{name}'" + (f", {as_of}" if as_of is not None else "")
    return f"SELECT {columns} FROM latest({args}) {where} {tail}"


def check_latest(gateway, name, log, what, as_of_ms=None):
    as_of = None if as_of_ms is None else sql_timestamp(as_of_ms)
    want = project(log.latest(as_of_ms))
    compare(rows(gateway, latest_sql(name, as_of)), want, what)
    return want


def check_log(gateway, name, log, what):
    """Scaffolding: the table itself holds exactly the records the model holds (offsets, keys, timestamps,
    values), so a difference in latest() is latest()'s."""
    got = rows(gateway, f"SELECT _partition, _offset, _key, _timestamp, name, score, _error FROM {name} "
                        "ORDER BY _partition, _offset")
    seen = {(r["_partition"], r["_offset"]): r for r in got}
    assert set(seen) == set(log.records), (
        f"{what}: the table has {len(seen)} records, the model {len(log.records)}; "
        f"missing {sorted(set(log.records) - set(seen))[:10]}, extra {sorted(set(seen) - set(log.records))[:10]}")
    for at, record in log.records.items():
        row = seen[at]
        value = json.loads(record["value"]) if record["value"] is not None else {"name": None, "score": None}
        assert (row["_key"], ms_of(row["_timestamp"]), row["name"], row["score"], row["_error"]) == (
            record["key"], record["timestamp"], value["name"], value["score"], None), (what, at, row, record)


def full_rows_are_rows_of_the_table(gateway, name, what, log_name=None):
    """`SELECT * FROM latest(t)` has t's columns (names and types), and each of its rows is t's row at
    that offset, every column equal (t's records read from `log_name`, a table over the same topic, when
    t is a changelog table)."""
    table = query(gateway, f"SELECT * FROM {log_name or name}")
    latest = query(gateway, f"SELECT * FROM latest('{name}') ORDER BY _key")
    assert latest.schema.names == table.schema.names, (what, latest.schema.names, table.schema.names)
    assert [f.type for f in latest.schema] == [f.type for f in table.schema], (what, latest.schema, table.schema)
    by_offset = {(r["_partition"], r["_offset"]): r for r in table.to_pylist()}
    for r in latest.to_pylist():
        assert r == by_offset[(r["_partition"], r["_offset"])], (what, r)
    return latest.to_pylist()


def lake_marks(table):
    dt = DeltaTable(str(table["path"]))
    return {p: dt.transaction_version(f"kappa/{table['name']}/{p}") or 0 for p in range(PARTITIONS)}


# ---------------------------------------------------------------------------------------------
# Fixtures


def toml_table(name, topic, changelog=None):
    text = f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\ncolumns = "{COLUMNS}"\n'
    if changelog is not None:
        text += f'changelog = "{changelog}"\n'
    return text


@pytest.fixture()
def users(brokers, tmp_path):
    """A fresh 3-partition topic declared (TOML) as JSON table `users_…` (name VARCHAR, score BIGINT), with a
    lake folder for the compactor: the shape test_snapshots' `tier` and `lake_gateway` take."""
    topic = unique("chg")
    create_topic(brokers, topic, partitions=PARTITIONS)
    name = "users_" + topic.split("-")[-1]
    config = tmp_path / "kappa.toml"
    config.write_text(toml_table(name, topic))
    lake = tmp_path / "lake"
    return {"topic": topic, "name": name, "config": config, "lake": lake, "path": lake / "tables" / name}


# ---------------------------------------------------------------------------------------------
# 1. A randomized workload against the model, from Kafka and the lake


@pytest.mark.parametrize("declared", ["users", "changelog_users"])
def test_latest_matches_the_model_from_kafka_the_lake_and_after_kafka_deletes(brokers, declared, request):
    """With `changelog_users`, the compactor also keeps the latest rows, which latest() reads."""
    users = request.getfixturevalue(declared)
    seed, rng = seeded()
    topic, name = users["topic"], users["name"]
    log_name = users.get("log", name)
    work, log, now = Workload(rng), Log(), now_ms()
    log.add(produce_acked(brokers, topic, work.records(220, now - 2 * HOUR_MS, skew=0.05)))
    log.add(produce_acked(brokers, topic, work.records(100, now - 20 * MINUTE_MS, skew=0.05)))
    gateway = lake_gateway(brokers, users)
    try:
        check_log(gateway, log_name, log, f"seed {seed}")
        split = {k for k, (p, _, _) in log.winners().items() if any(
            r["key"] == k and q != p for (q, _), r in log.records.items())}
        assert split, f"seed {seed}: the workload writes some keys to two partitions"
        want = check_latest(gateway, name, log, f"seed {seed}: Kafka only")
        assert len(want) > 20, f"seed {seed}: {len(want)} keys live"
        full_rows_are_rows_of_the_table(gateway, name, f"seed {seed}: Kafka only", log_name)

        # The records older than an hour (the first 220) go to the lake; the rest stay in Kafka only.
        run = compactor(brokers, users["lake"], users["config"], "--tier-after", "1h", "--max-records-per-commit", "45")
        assert run.returncode == 0, run.stderr
        marks = lake_marks(users)
        ends = {p: high for p, (_, high) in offsets_of(brokers, topic).items()}
        assert 0 < sum(marks.values()) == 220 < sum(ends.values()), (marks, ends)
        check_latest(gateway, name, log, f"seed {seed}: lake below {marks}, Kafka to {ends}")
        full_rows_are_rows_of_the_table(gateway, name, f"seed {seed}: lake and Kafka", log_name)

        log.add(produce_acked(brokers, topic, work.records(100, now - 5 * MINUTE_MS, skew=0.05)))
        check_latest(gateway, name, log, f"seed {seed}: lake below {marks}, 200 records above in Kafka")

        tier(brokers, users, "--max-records-per-commit", "40")
        marks = lake_marks(users)
        ends = {p: high for p, (_, high) in offsets_of(brokers, topic).items()}
        assert marks == ends, (marks, ends)
        check_latest(gateway, name, log, f"seed {seed}: all of it in the lake ({marks})")

        # Kafka deletes what the lake holds: all of partitions 0 and 1, half of partition 2.
        for p, before in ((0, marks[0]), (1, marks[1]), (2, marks[2] // 2)):
            delete_records(brokers, topic, p, before)
        starts = {p: low for p, (low, _) in offsets_of(brokers, topic).items()}
        assert starts == {0: marks[0], 1: marks[1], 2: marks[2] // 2}, starts
        check_latest(gateway, name, log, f"seed {seed}: Kafka's log starts at {starts}, the lake has the rest")
        full_rows_are_rows_of_the_table(gateway, name, f"seed {seed}: after DeleteRecords", log_name)

        log.add(produce_acked(brokers, topic, work.records(80, now - MINUTE_MS)))
        check_latest(gateway, name, log, f"seed {seed}: log starts {starts}, 80 more records in Kafka")
        tier(brokers, users)
        check_latest(gateway, name, log, f"seed {seed}: log starts {starts}, all tiered again")
    finally:
        gateway.stop()


@pytest.mark.parametrize("declared", ["users", "changelog_users"])
def test_latest_is_right_at_every_moment_while_the_compactor_tiers(brokers, declared, request):
    """With `changelog_users`, the compactor also keeps the latest rows, which latest() reads."""
    users = request.getfixturevalue(declared)
    seed, rng = seeded()
    topic, name = users["topic"], users["name"]
    log_name = users.get("log", name)
    work, log, now = Workload(rng), Log(), now_ms()
    log.add(produce_acked(brokers, topic, work.records(400, now - HOUR_MS, skew=0.05)))
    gateway = lake_gateway(brokers, users)
    stop, errors, runs = threading.Event(), [], [0]

    def compacting():
        while not stop.is_set():
            run = compactor(brokers, users["lake"], users["config"], "--tier-after", "0s",
                            "--max-records-per-commit", "8")
            if run.returncode != 0:
                errors.append(run.stderr)
                return
            runs[0] += 1

    thread = threading.Thread(target=compacting, daemon=True)
    try:
        want = check_latest(gateway, name, log, f"seed {seed}: before the compactor")
        thread.start()
        seen_marks, answers = set(), 0
        deadline = time.monotonic() + 120
        while runs[0] < 2 or answers < 8:
            assert time.monotonic() < deadline, f"{answers} answers, {runs[0]} compactor runs in 120 s"
            assert not errors, errors
            marks = tuple(r["lake_watermark"] for r in rows(
                gateway, f"SELECT partition, lake_watermark FROM system.partitions WHERE topic = '{topic}' ORDER BY 1"))
            seen_marks.add(marks)
            compare(rows(gateway, latest_sql(name)), want,
                    f"seed {seed}: answer {answers}, the compactor running (lake watermarks about {marks})")
            answers += 1
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(DEADLINE_S * 4)
        gateway.stop()
    assert not errors, errors
    print(f"seed {seed}: {answers} answers over lake watermarks {sorted(seen_marks, key=str)}")
    assert len(seen_marks) >= 2, f"the answers saw the lake's watermarks move: {seen_marks}"
    assert DeltaTable(str(users["path"])).version() >= 10, "the compactor committed in many small steps"


# ---------------------------------------------------------------------------------------------
# 2. As of a time


def telling_cut(log, candidates):
    """The first of `candidates` (times in ms) at which the state as of it tells apart what a wrong
    as-of would mix up: some key live then is deleted later, some key is updated later, the record at
    the cut is its key's row (so `<=` includes it), and today's rows filtered by `_timestamp <= cut`
    differ from the state as of the cut."""
    at_end = log.latest()
    live_at_end = {r["_key"]: r for r in at_end}
    for cut in candidates:
        at_cut = log.latest(cut)
        if ({r["_key"] for r in at_cut} - set(live_at_end)
                and any(r["_key"] in live_at_end and live_at_end[r["_key"]]["_offset"] != r["_offset"] for r in at_cut)
                and any(r["_ts"] == cut for r in at_cut)
                and [r for r in at_end if r["_ts"] <= cut] != at_cut):
            return cut
    return None


def test_latest_as_of_a_time_counts_only_records_at_or_before_it(brokers, users):
    seed, rng = seeded()
    topic, name = users["topic"], users["name"]
    work, log, now = Workload(rng, keys=30), Log(), now_ms()
    # Some timestamps go backwards in their partition (a producer's clock): offsets and times disagree.
    log.add(produce_acked(brokers, topic, work.records(300, now - HOUR_MS, skew=0.08)))
    times = sorted(r["timestamp"] for r in log.records.values())
    # And one key live in the middle is deleted last.
    victim = log.latest(times[150])[0]["_key"]
    log.add(produce_acked(brokers, topic, [{"partition": work.home[victim], "key": victim, "value": None,
                                             "timestamp": work.timestamp(now - 1000)}]))
    cut = telling_cut(log, times[100:250])
    assert cut is not None, f"seed {seed}: no time in the middle tells the states apart"
    at_cut, at_end = log.latest(cut), log.latest()
    gateway = lake_gateway(brokers, users)
    try:
        for where in ("Kafka only", "in the lake"):
            for as_of in (cut, cut - 1, times[0] - 1, times[40], times[-1], now + HOUR_MS):
                check_latest(gateway, name, log, f"seed {seed}, {where}: as of {sql_timestamp(as_of)}", as_of)
            # Any timestamp expression: the same state from an expression as from a literal.
            compare(rows(gateway, latest_sql(name, f"{sql_timestamp(cut + 1000)} - INTERVAL '1 second'")),
                    project(at_cut), f"seed {seed}, {where}: as of an expression")
            compare(rows(gateway, latest_sql(name, f"to_timestamp_millis({cut})")), project(at_cut),
                    f"seed {seed}, {where}: as of to_timestamp_millis({cut})")
            # `WHERE _timestamp <= cut` is a filter of today's rows, not a state as of the cut.
            filtered = [r for r in at_end if r["_ts"] <= cut]
            assert filtered != at_cut, f"seed {seed}: the workload tells the two apart"
            compare(rows(gateway, latest_sql(name, where=f"WHERE _timestamp <= {sql_timestamp(cut)}")),
                    project(filtered), f"seed {seed}, {where}: latest rows whose _timestamp <= the cut")
            if where == "Kafka only":
                tier(brokers, users, "--max-records-per-commit", "50")
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# Filters, limits and aggregates apply to the latest rows, never to the log below them


def test_filters_limits_and_aggregates_apply_to_the_latest_rows(brokers, users):
    seed, rng = seeded()
    topic, name = users["topic"], users["name"]
    work, log, now = Workload(rng, keys=25), Log(), now_ms()
    log.add(produce_acked(brokers, topic, work.records(150, now - 2 * HOUR_MS)))
    log.add(produce_acked(brokers, topic, work.records(150, now - 10 * MINUTE_MS)))
    gateway = lake_gateway(brokers, users)
    try:
        for where in ("Kafka only", "half in the lake"):
            latest, what = log.latest(), f"seed {seed}, {where}"
            offsets = sorted(r["_offset"] for r in latest)
            middle = offsets[len(offsets) // 2]
            cut = sorted(r["_ts"] for r in latest)[len(latest) // 2]
            deleted = sorted(set(k for k in work.keys) - {r["_key"] for r in latest})
            cases = [
                ("WHERE score > 0", [r for r in latest if r["score"] > 0]),
                (f"WHERE _offset < {middle}", [r for r in latest if r["_offset"] < middle]),
                (f"WHERE _offset >= {middle}", [r for r in latest if r["_offset"] >= middle]),
                ("WHERE _partition = 0", [r for r in latest if r["_partition"] == 0]),
                (f"WHERE _timestamp > {sql_timestamp(cut)}", [r for r in latest if r["_ts"] > cut]),
                ("WHERE name IS NULL", []),  # a tombstone is no row, not a row of nulls
                ("WHERE _key IS NULL", []),  # records with a null key are not part of it
            ]
            if deleted:
                cases.append((f"WHERE _key = X'{deleted[0].hex()}'", []))
            live = latest[len(latest) // 3]
            cases.append((f"WHERE _key = X'{live['_key'].hex()}'", [live]))
            for filter_, want in cases:
                compare(rows(gateway, latest_sql(name, where=filter_)), project(want), f"{what}: {filter_}")
            compare(rows(gateway, latest_sql(name, tail="ORDER BY _key LIMIT 5")), project(latest[:5]),
                    f"{what}: LIMIT 5")
            # The newest rows (the plan rule that reads only each partition's tail must not reach below latest()).
            newest = sorted(latest, key=lambda r: (r["_offset"], r["_partition"]), reverse=True)
            compare(rows(gateway, latest_sql(name, tail="ORDER BY _offset DESC, _partition DESC LIMIT 5")),
                    project(newest[:5]), f"{what}: ORDER BY _offset DESC LIMIT 5")
            compare(rows(gateway, latest_sql(name, where="WHERE _partition = 1", tail="ORDER BY _offset DESC LIMIT 3")),
                    project([r for r in newest if r["_partition"] == 1][:3]),
                    f"{what}: WHERE _partition = 1 ORDER BY _offset DESC LIMIT 3")
            assert rows(gateway, f"SELECT count(*) AS n, sum(score) AS total, count(DISTINCT _key) AS keys "
                                 f"FROM latest('{name}')") == [
                {"n": len(latest), "total": sum(r["score"] for r in latest), "keys": len(latest)}], what
            by_partition = rows(gateway, f"SELECT _partition, count(*) AS n FROM latest('{name}') "
                                         "GROUP BY _partition ORDER BY _partition")
            want = [{"_partition": p, "n": sum(r["_partition"] == p for r in latest)} for p in range(PARTITIONS)]
            assert by_partition == [w for w in want if w["n"]], (what, by_partition, want)
            # Joined back to its table, each latest row is one row of it.
            joined = rows(gateway, f"SELECT count(*) AS n FROM latest('{name}') l JOIN {name} t "
                                   "ON l._partition = t._partition AND l._offset = t._offset")
            assert joined == [{"n": len(latest)}], (what, joined)
            if where == "Kafka only":
                run = compactor(brokers, users["lake"], users["config"], "--tier-after", "1h")
                assert run.returncode == 0, run.stderr
                assert sum(lake_marks(users).values()) == 150
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# 5. Tombstones, null keys and the rule across partitions, case by case


def test_tombstones_null_keys_and_keys_in_several_partitions(brokers, users):
    topic, name = users["topic"], users["name"]
    t = now_ms() - HOUR_MS

    def v(label, score):
        return json.dumps({"name": label, "score": score}).encode()

    records = [
        # deleted: written, then a tombstone.
        {"partition": 0, "key": b"deleted", "value": v("d1", 1), "timestamp": t + 1},
        {"partition": 0, "key": b"deleted", "value": None, "timestamp": t + 2},
        # only ever tombstones.
        {"partition": 1, "key": b"ghost", "value": None, "timestamp": t + 3},
        {"partition": 1, "key": b"ghost", "value": None, "timestamp": t + 4},
        # back: written, deleted, written again.
        {"partition": 2, "key": b"back", "value": v("b1", 1), "timestamp": t + 5},
        {"partition": 2, "key": b"back", "value": None, "timestamp": t + 6},
        {"partition": 2, "key": b"back", "value": v("b3", 3), "timestamp": t + 7},
        # null keys: never rows of latest().
        {"partition": 0, "key": None, "value": v("null0", 0), "timestamp": t + 8},
        {"partition": 1, "key": None, "value": v("null1", 0), "timestamp": t + 9},
        # the empty key is a key (not a null one); and raw bytes that are not text.
        {"partition": 1, "key": b"", "value": v("empty", 5), "timestamp": t + 10},
        {"partition": 2, "key": b"\xff\x00\x80", "value": v("binary", 6), "timestamp": t + 11},
        # skewed: in one partition the higher offset wins, though its timestamp is older.
        {"partition": 0, "key": b"skewed", "value": v("s-new-time", 1), "timestamp": t + 50},
        {"partition": 0, "key": b"skewed", "value": v("s-high-offset", 2), "timestamp": t + 40},
        # moved: the later timestamp wins across partitions, whatever the offsets.
        {"partition": 2, "key": b"moved", "value": v("m-p2", 1), "timestamp": t + 20},
        {"partition": 0, "key": b"moved", "value": v("m-p0", 2), "timestamp": t + 30},
        # tie: equal timestamps in three partitions, the highest partition wins.
        {"partition": 2, "key": b"tie", "value": v("tie-p2", 2), "timestamp": t + 60},
        {"partition": 0, "key": b"tie", "value": v("tie-p0", 0), "timestamp": t + 60},
        {"partition": 1, "key": b"tie", "value": v("tie-p1", 1), "timestamp": t + 60},
        # tie-deleted: a tombstone in the higher partition at the same time deletes the key.
        {"partition": 0, "key": b"tie-deleted", "value": v("td-p0", 0), "timestamp": t + 61},
        {"partition": 1, "key": b"tie-deleted", "value": None, "timestamp": t + 61},
        # moved-deleted: a tombstone written to another partition, later, deletes it.
        {"partition": 1, "key": b"moved-deleted", "value": v("md-p1", 1), "timestamp": t + 70},
        {"partition": 0, "key": b"moved-deleted", "value": None, "timestamp": t + 71},
        # combo: partition 0's winner is its higher offset (at t+40, not the record at t+50), so
        # partition 1's record at t+45 is later and wins.
        {"partition": 0, "key": b"combo", "value": v("c-p0-old-offset", 1), "timestamp": t + 90},
        {"partition": 0, "key": b"combo", "value": v("c-p0-high-offset", 2), "timestamp": t + 80},
        {"partition": 1, "key": b"combo", "value": v("c-p1", 3), "timestamp": t + 85},
    ]
    log = Log()
    for r in records:  # one at a time: the offsets follow the list's order in each partition
        log.add(produce_acked(brokers, topic, [r]))
    expected = {b"back": "b3", b"": "empty", b"\xff\x00\x80": "binary", b"skewed": "s-high-offset",
                b"moved": "m-p0", b"tie": "tie-p2", b"combo": "c-p1"}
    model = log.latest()
    assert {r["_key"]: r["name"] for r in model} == expected, "the model follows the rule"
    # As of a time: before the tombstone `deleted` is there; `combo` before partition 1's record is
    # partition 0's record at t+80 (its record at t+90 is later than the cut).
    as_of = {t + 1: {b"deleted": "d1"},
             t + 46: {b"back": "b3", b"": "empty", b"\xff\x00\x80": "binary", b"skewed": "s-high-offset",
                      b"moved": "m-p0"},
             t + 84: {b"back": "b3", b"": "empty", b"\xff\x00\x80": "binary", b"skewed": "s-high-offset",
                      b"moved": "m-p0", b"tie": "tie-p2", b"combo": "c-p0-high-offset"}}
    for cut, names in as_of.items():
        assert {r["_key"]: r["name"] for r in log.latest(cut)} == names, ("the model as of", cut - t)
    gateway = lake_gateway(brokers, users)
    try:
        check_log(gateway, name, log, "the edge cases")
        for where in ("Kafka", "the lake"):
            check_latest(gateway, name, log, f"edge cases, from {where}")
            for cut in as_of:
                check_latest(gateway, name, log, f"edge cases, from {where}, as of t+{cut - t} ms", cut)
            full_rows_are_rows_of_the_table(gateway, name, f"edge cases, from {where}")
            if where == "Kafka":
                # The topic with no definition, under its own name: the same keys and offsets.
                compare(rows(gateway, f"SELECT _key, _partition, _offset FROM latest('{topic}') ORDER BY _key"),
                        [{k: r[k] for k in ("_key", "_partition", "_offset")} for r in model],
                        f"edge cases, latest('{topic}') of the raw topic")
                tier(brokers, users)
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# 3. Tables declared with 'changelog' 'upsert'


def create_users(name, topic, changelog="upsert"):
    return (f'CREATE EXTERNAL TABLE "{name}" ({COLUMNS}) STORED AS KAFKA LOCATION \'{topic}\' '
            f"OPTIONS ('value.format' 'json', 'changelog' '{changelog}')")


def check_upsert_table(gateway, name, log, what):
    """`SELECT * FROM name` is latest('name'), and both are the model."""
    compare(rows(gateway, f"SELECT {PROJECTION} FROM \"{name}\" ORDER BY _key"), project(log.latest()), what)
    assert_same_rows(rows(gateway, f'SELECT * FROM "{name}" ORDER BY _key'),
                     rows(gateway, f"SELECT * FROM latest('{name}') ORDER BY _key"), f"{what}: * = latest()")
    want = [r for r in log.latest() if r["score"] > 0]
    compare(rows(gateway, f'SELECT {PROJECTION} FROM "{name}" WHERE score > 0 ORDER BY _key'), project(want),
            f"{what}: WHERE score > 0")
    assert rows(gateway, f'SELECT count(*) AS n FROM "{name}"') == [{"n": len(log.latest())}], what
    newest = sorted(log.latest(), key=lambda r: (r["_offset"], r["_partition"]), reverse=True)[:4]
    compare(rows(gateway, f'SELECT {PROJECTION} FROM "{name}" ORDER BY _offset DESC, _partition DESC LIMIT 4'),
            project(newest), f"{what}: the newest 4 rows")


def test_a_table_defined_by_sql_as_an_upsert_changelog_reads_as_its_latest_rows(brokers, tmp_path):
    seed, rng = seeded()
    topic = unique("chg-sql")
    create_topic(brokers, topic, partitions=PARTITIONS)
    name = "upserts_" + topic.split("-")[-1]
    work, log, now = Workload(rng, keys=30), Log(), now_ms()
    log.add(produce_acked(brokers, topic, work.records(250, now - HOUR_MS)))
    lake = tmp_path / "lake"
    gateway = Gateway(brokers, extra_args=["--lake", str(lake)])
    try:
        # Any other value is refused when the table is defined.
        for other in ("append", "nope", ""):
            text = refused("InvalidArgument", rows, gateway, create_users(f"bad_{other or 'empty'}", topic, other))
            assert "changelog" in text, text
        assert not (lake / "_kappa" / "tables" / "bad_append.json").exists()

        assert rows(gateway, create_users(name, topic)) == []
        check_upsert_table(gateway, name, log, f"seed {seed}: defined by SQL, Kafka only")
        shown = rows(gateway, f'SHOW CREATE TABLE "{name}"')[0]["definition"]
        assert "'changelog' 'upsert'" in shown and "'value.format' 'json'" in shown, shown
        # A table like any other, as information_schema lists it (GetTables says TABLE too).
        listed = rows(gateway, f"SELECT table_type FROM information_schema.tables WHERE table_name = '{name}'")
        assert listed == [{"table_type": "BASE TABLE"}], listed
        # The statement shown makes the same table.
        copy = "copy_" + name
        rows(gateway, shown.replace(f'"{name}"', f'"{copy}"', 1).replace(f"EXTERNAL TABLE {name} ",
                                                                           f"EXTERNAL TABLE {copy} ", 1))
        check_upsert_table(gateway, copy, log, f"seed {seed}: made from SHOW CREATE TABLE's statement")

        # A token of the table replays its latest rows after more updates and tombstones.
        info, first = flight(gateway, f'SELECT * FROM "{name}" ORDER BY _key')
        token, before = token_of(info), first.to_pylist()
        log.add(produce_acked(brokers, topic, work.records(120, now - 30 * MINUTE_MS, tombstones=0.3)))
        check_upsert_table(gateway, name, log, f"seed {seed}: defined by SQL, after 120 more records")
        assert_same_rows(rows(gateway, f'SELECT * FROM "{name}" ORDER BY _key', token), before,
                         f"seed {seed}: the token of the upsert table")

        # The compactor tiers every record of it (the log, not the latest rows): the table reads the same.
        config = tmp_path / "empty.toml"
        config.write_text("")
        run = compactor(brokers, lake, config, "--tier-after", "0s", "--max-records-per-commit", "60")
        assert run.returncode == 0, run.stderr
        tiered = DeltaTable(str(lake / "tables" / name)).to_pyarrow_table(columns=["_partition", "_offset"])
        assert tiered.num_rows == len(log.records), "the lake holds the log, every record"
        check_upsert_table(gateway, name, log, f"seed {seed}: defined by SQL, in the lake")
        log.add(produce_acked(brokers, topic, work.records(60, now - 10 * MINUTE_MS)))
        check_upsert_table(gateway, name, log, f"seed {seed}: defined by SQL, lake and Kafka")
        # latest() of an upsert table is the same table; as of a time, too.
        cut = now - 30 * MINUTE_MS + 500
        compare(rows(gateway, latest_sql(name, sql_timestamp(cut))), project(log.latest(cut)),
                f"seed {seed}: latest() of the upsert table as of {sql_timestamp(cut)}")
        assert_same_rows(rows(gateway, f'SELECT * FROM "{name}" ORDER BY _key', token), before,
                         f"seed {seed}: the token of the upsert table, after tiering")
    finally:
        gateway.stop()


def test_a_toml_table_with_changelog_upsert_reads_as_its_latest_rows(brokers, users):
    seed, rng = seeded()
    topic, name = users["topic"], users["name"]
    users["config"].write_text(toml_table(name, topic, "upsert"))
    work, log, now = Workload(rng, keys=30), Log(), now_ms()
    log.add(produce_acked(brokers, topic, work.records(250, now - HOUR_MS)))
    gateway = lake_gateway(brokers, users)
    try:
        check_upsert_table(gateway, name, log, f"seed {seed}: TOML, Kafka only")
        shown = rows(gateway, f'SHOW CREATE TABLE "{name}"')[0]["definition"]
        assert "'changelog' 'upsert'" in shown, shown
        tier(brokers, users, "--max-records-per-commit", "80")  # the compactor reads the same config
        check_upsert_table(gateway, name, log, f"seed {seed}: TOML, in the lake")
        log.add(produce_acked(brokers, topic, work.records(60, now - 10 * MINUTE_MS)))
        check_upsert_table(gateway, name, log, f"seed {seed}: TOML, lake and Kafka")
    finally:
        gateway.stop()


def test_a_toml_table_with_another_changelog_value_is_refused(brokers, users):
    users["config"].write_text(toml_table(users["name"], users["topic"], "nope"))
    binary = os.environ["KAPPA_GATEWAY_BIN"]
    process = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--brokers", brokers,
                                "--config", str(users["config"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=dict(os.environ, KAPPA_LOG="warn"))
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError("a gateway with changelog = \"nope\" started and kept running")
    assert process.returncode != 0 and "changelog" in stderr, (process.returncode, stderr)


# ---------------------------------------------------------------------------------------------
# 4. Snapshot tokens


def test_a_token_of_latest_replays_the_same_rows_after_updates_tombstones_tiering_and_deletes(brokers, users):
    seed, rng = seeded()
    topic, name = users["topic"], users["name"]
    work, log, now = Workload(rng, keys=30), Log(), now_ms()
    log.add(produce_acked(brokers, topic, work.records(200, now - HOUR_MS)))
    gateway = lake_gateway(brokers, users)
    sql = f"SELECT * FROM latest('{name}') ORDER BY _key"
    as_of_sql = f"SELECT * FROM latest('{name}', {sql_timestamp(now)}) ORDER BY _key"
    try:
        info, first = flight(gateway, sql)
        from_info, before = token_of(info), first.to_pylist()
        from_function = take(gateway, name)
        compare([{k: r[k] for k in ("_key", "_partition", "_offset", "name", "score")} for r in before],
                project(log.latest()), f"seed {seed}: the first answer")
        assert_same_rows(rows(gateway, as_of_sql), before, f"seed {seed}: as of now = latest")

        def replays(when):
            for which, token in (("FlightInfo's token", from_info), ("snapshot()'s token", from_function)):
                what = f"seed {seed}: {which}, {when}"
                assert_same_rows(rows(gateway, sql, token), before, what)
                assert_same_rows(rows(gateway, as_of_sql, token), before, f"{what}, as of")
                info, answer = flight(gateway, sql, token)
                assert_same_rows(answer.to_pylist(), before, f"{what}, through pyarrow.flight")
                assert_same_rows(rows(gateway, sql, token_of(info)), before, f"{what}: the token of the replay")

        replays("at once")
        # Updates and tombstones, some of them with times before the token's newest record: still not seen.
        more = work.records(120, now - 30 * MINUTE_MS, tombstones=0.35)
        more += [{**r, "timestamp": work.timestamp(now - HOUR_MS + 7)} for r in work.records(10, 0)]
        log.add(produce_acked(brokers, topic, more))
        check_latest(gateway, name, log, f"seed {seed}: without the token, today's latest rows")
        assert rows(gateway, sql) != before, "the updates changed the answer"
        replays("after updates and tombstones")
        tier(brokers, users, "--max-records-per-commit", "50")
        replays("after the compactor tiered all of it")
        marks = lake_marks(users)
        for p in range(PARTITIONS):
            delete_records(brokers, topic, p, marks[p])
        replays("after Kafka deleted everything the lake holds")
        check_latest(gateway, name, log, f"seed {seed}: without the token, after Kafka deleted")
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# Only a null value is a tombstone


def test_a_value_whose_columns_are_all_null_is_a_row_not_a_tombstone(brokers, users):
    """A tombstone is a record whose value is null. A value that is there but decodes to no column
    (`{}`, fields all null, only undeclared fields) is the key's row with null columns, and an undecodable
    one is its row with `_error`: none of them deletes the key, in the declared table as in the raw topic."""
    topic, name = users["topic"], users["name"]
    t = now_ms() - HOUR_MS
    first = json.dumps({"name": "first", "score": 1}).encode()
    cases = {b"empty-object": b"{}", b"null-fields": b'{"name": null, "score": null}',
             b"undeclared-fields": b'{"nickname": "x"}', b"undecodable": b"{poison"}
    records = []
    for i, (key, value) in enumerate(sorted(cases.items())):
        records += [{"partition": i % PARTITIONS, "key": key, "value": first, "timestamp": t + 2 * i},
                    {"partition": i % PARTITIONS, "key": key, "value": value, "timestamp": t + 2 * i + 1}]
    records.append({"partition": 0, "key": b"tombstone", "value": first, "timestamp": t + 20})
    records.append({"partition": 0, "key": b"tombstone", "value": None, "timestamp": t + 21})
    acked = produce_acked(brokers, topic, records)
    where = {(r["key"], r["value"]): at for at, r in acked.items()}
    gateway = lake_gateway(brokers, users)
    try:
        for tier_ in ("Kafka", "the lake"):
            got = rows(gateway, f"SELECT _key, _partition, _offset, name, score, _error IS NOT NULL AS bad, _value "
                                f"FROM latest('{name}') ORDER BY _key")
            want = [{"_key": key, "_partition": where[(key, value)][0], "_offset": where[(key, value)][1],
                     "name": None, "score": None, "bad": key == b"undecodable",
                     # The bytes of a value that did not decode, or decoded to a row of nulls, are
                     # kept in `_value`: that is what tells it from a tombstone, in both tiers.
                     "_value": value} for key, value in sorted(cases.items())]
            compare(got, want, f"from {tier_}: values that decode to nothing are rows, not tombstones")
            raw = rows(gateway, f"SELECT _key, _partition, _offset FROM latest('{topic}') ORDER BY _key")
            compare(raw, [{k: w[k] for k in ("_key", "_partition", "_offset")} for w in want],
                    f"from {tier_}: the raw topic's latest() has the same keys")
            if tier_ == "Kafka":
                tier(brokers, users)
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# Grants and wrong arguments


def test_latest_reads_only_granted_tables(secured):
    secrets, orders = secured["secrets"], secured["orders"]
    with flightsql.connect(secured["uri"], db_kwargs={TLS_ROOT: secured["ca"], "username": "analyst",
                                                      "password": "s3cret"}, autocommit=True) as conn:
        with conn.cursor() as cur:
            # Granted: its records have no key, so latest() has no row; the table's columns all the same.
            cur.execute(f"SELECT * FROM latest('{orders}')")
            answer = cur.fetch_arrow_table()
            assert answer.num_rows == 0 and "n" in answer.schema.names, answer
        for sql in (f"SELECT * FROM latest('{secrets}')", f"SELECT count(*) FROM latest('{secrets}', now())",
                    f"SELECT o._offset FROM {orders} o JOIN latest('{secrets}') s ON o._offset = s._offset"):
            with pytest.raises(flightsql.Error) as denied, conn.cursor() as cur:
                cur.execute(sql)
                cur.fetch_arrow_table()
            text = str(denied.value)
            assert ("PermissionDenied" in text or "PERMISSION_DENIED" in text) and secrets in text, (sql, text)


def test_wrong_arguments_are_refused_with_the_usage(brokers, users):
    name = users["name"]
    gateway = lake_gateway(brokers, users)
    try:
        for sql in ("SELECT * FROM latest()", f"SELECT * FROM latest('{name}', 'earliest')",
                    f"SELECT * FROM latest('{name}', 5)", f"SELECT * FROM latest('{name}', now(), now())"):
            text = refused("InvalidArgument", rows, gateway, sql)
            assert "latest('table'" in text, (sql, text)
        text = str(pytest.raises(Exception, rows, gateway, "SELECT * FROM latest('no_such_table')").value)
        assert "NotFound" in text and "no_such_table" in text, text
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# Partitions added to the topic


def grow(brokers, topic, partitions):
    """Adds partitions to `topic`: False where the broker cannot (CreatePartitions unsupported)."""
    admin = AdminClient({"bootstrap.servers": brokers})
    try:
        futures = admin.create_partitions([NewPartitions(topic, partitions)], operation_timeout=DEADLINE_S)
        for future in futures.values():
            future.result(timeout=DEADLINE_S)
    except Exception as why:
        if "UNSUPPORTED_FEATURE" in str(why):
            return False
        raise
    return True


def test_keys_moved_to_a_partition_added_later(brokers, tmp_path):
    """A topic grows from 2 to 3 partitions and the producer's partitioner moves keys: each key's newest
    record is then in a partition its older ones are not in; the later timestamp wins. (Where the test
    broker cannot add partitions, the topic has 3 from the start and the third stays empty until then.)"""
    seed, rng = seeded()
    probe = unique("chg-probe")
    create_topic(brokers, probe, partitions=1)
    can_grow = grow(brokers, probe, 2)
    topic = unique("chg-grow")
    create_topic(brokers, topic, partitions=2 if can_grow else 3)
    name = "grown_" + topic.split("-")[-1]
    config = tmp_path / "kappa.toml"
    config.write_text(toml_table(name, topic))
    lake = tmp_path / "lake"
    table = {"topic": topic, "name": name, "config": config, "lake": lake, "path": lake / "tables" / name}
    work, log, now = Workload(rng, keys=30, partitions=2, split=0), Log(), now_ms()
    log.add(produce_acked(brokers, topic, work.records(150, now - 2 * HOUR_MS, skew=0.05)))
    gateway = Gateway(brokers, config.read_text(), ["--lake", str(lake), "--topic-refresh", "1s"])
    try:
        check_latest(gateway, name, log, f"seed {seed}: two partitions")
        tier(brokers, table)
        if can_grow:
            assert grow(brokers, topic, 3)
        # The partitioner now spreads keys over three partitions: a third of them move to the new one.
        work.partitions = 3
        work.home = {k: (i * 7 + 1) % 3 for i, k in enumerate(work.keys)}
        log.add(produce_acked(brokers, topic, work.records(90, now - HOUR_MS, skew=0.05)))
        assert any(p == 2 for p, _ in log.records), "some records are in the new partition"
        moved = {k for k, (p, _, _) in log.winners().items() if p == 2}
        assert moved, f"seed {seed}: some keys' newest record is in the new partition"
        deadline = time.monotonic() + 15
        while True:  # the gateway sees the new partition within --topic-refresh
            try:
                check_latest(gateway, name, log, f"seed {seed}: three partitions, the lake holds two")
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        tier(brokers, table)
        check_latest(gateway, name, log, f"seed {seed}: three partitions, all in the lake")
        # As of before the move: the state of the two old partitions.
        check_latest(gateway, name, log, f"seed {seed}: as of before the move", now - HOUR_MS - 2000)
        log.add(produce_acked(brokers, topic, work.records(60, now - 30 * MINUTE_MS, skew=0.05)))
        check_latest(gateway, name, log, f"seed {seed}: 60 more records")
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# 4. The latest rows the compactor keeps for a changelog table (issue 24, item 6)


@pytest.fixture()
def changelog_users(brokers, tmp_path):
    """`users`, declared with changelog = "upsert": the compactor keeps its latest rows at
    <lake>/latest/<name>/ beside its history at <lake>/tables/<name>/."""
    topic = unique("chl")
    create_topic(brokers, topic, partitions=PARTITIONS)
    name = "users_" + topic.split("-")[-1]
    config = tmp_path / "kappa.toml"
    # `<name>_log`: the same topic read as its records (FROM a changelog table reads its latest rows).
    config.write_text(toml_table(name, topic, changelog="upsert") + toml_table(name + "_log", topic))
    lake = tmp_path / "lake"
    return {"topic": topic, "name": name, "config": config, "lake": lake, "path": lake / "tables" / name,
            "latest": lake / "latest" / name, "log": name + "_log"}


def kept_rows(table):
    """The latest rows the compactor keeps, read with the deltalake package: {(key, partition): offset}."""
    dt = DeltaTable(str(table["latest"]))
    kept = dt.to_pyarrow_table(columns=["_key", "_partition", "_offset"]).to_pylist()
    out = {(r["_key"], r["_partition"]): r["_offset"] for r in kept}
    assert len(out) == len(kept), f"one row per key and partition: {len(kept)} rows, {len(out)} pairs"
    return out


def newest_per_key_and_partition(log, below):
    """The model of the kept rows: each key's newest record per partition among offsets below `below`."""
    out = {}
    for (p, o), r in log.records.items():
        if r["key"] is not None and o < below.get(p, 0) and o > out.get((r["key"], p), -1):
            out[(r["key"], p)] = o
    return out


def covered(table):
    """The offsets the kept rows cover, per partition, from their `txn` actions (named after the history's
    Delta table id)."""
    history_id = DeltaTable(str(table["path"])).metadata().id
    dt = DeltaTable(str(table["latest"]))
    return {p: dt.transaction_version(f"kappa-latest/{history_id}/{p}") for p in range(PARTITIONS)}


def test_the_compactor_keeps_each_keys_latest_rows_and_latest_reads_them(brokers, changelog_users):
    table, (seed, rng) = changelog_users, seeded()
    topic, name = table["topic"], table["name"]
    work, log, now = Workload(rng, keys=30), Log(), now_ms()
    log.add(produce_acked(brokers, topic, work.records(600, now - 2 * HOUR_MS, skew=0.05)))
    gateway = lake_gateway(brokers, table)
    try:
        check_latest(gateway, name, log, f"seed {seed}: Kafka only")
        run = tier(brokers, table, "--max-records-per-commit", "250")
        assert "latest rows:" in run.stdout, run.stdout
        marks = lake_marks(table)
        assert sum(marks.values()) == 600, marks
        assert covered(table) == marks, (covered(table), marks)
        kept = kept_rows(table)
        assert kept == newest_per_key_and_partition(log, marks), f"seed {seed}: the kept rows"
        assert len(kept) < 60 < 600, f"about one row per key and partition: {len(kept)}"

        # latest() reads the kept rows (and the history above what they cover, here nothing).
        explain = "\n".join(r["plan"] for r in rows(gateway, f"EXPLAIN SELECT * FROM latest('{name}')"))
        assert f"latest({name})" in explain, explain
        want = check_latest(gateway, name, log, f"seed {seed}: kept rows at {marks}")
        assert rows(gateway, f"SELECT _key, _partition, _offset, name, score FROM {name} ORDER BY _key") == want
        full_rows_are_rows_of_the_table(gateway, name, f"seed {seed}: kept rows")

        # Updates, tombstones and new values above what they cover: read from Kafka beside them.
        log.add(produce_acked(brokers, topic, work.records(150, now - HOUR_MS, skew=0.05)))
        check_latest(gateway, name, log, f"seed {seed}: kept rows at {marks}, 150 records in Kafka")
        token = token_of(flight(gateway, latest_sql(name))[0])

        # Tiered part way (history above what the rows cover is read from the history), then merged.
        run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s",
                        "--max-records-per-commit", "60")
        assert run.returncode == 0, run.stderr
        marks = lake_marks(table)
        assert sum(marks.values()) == 750 and covered(table) == marks, (marks, covered(table))
        assert kept_rows(table) == newest_per_key_and_partition(log, marks), f"seed {seed}: merged"
        check_latest(gateway, name, log, f"seed {seed}: merged up to {marks}")
        log.add(produce_acked(brokers, topic, work.records(40, now - MINUTE_MS)))
        check_latest(gateway, name, log, f"seed {seed}: merged up to {marks}, 40 records in Kafka")

        # OPTIMIZE and VACUUM handle the latest rows too (each MERGE rewrote files); the answer stays.
        from test_maintenance import maintain
        for job in ("optimize", "vacuum"):
            run = maintain(job, table, *(["--retention", "0s"] if job == "vacuum" else []))
            assert run.returncode == 0 and f"{name} (latest rows):" in run.stdout, (job, run.stdout, run.stderr)
        live = {os.path.basename(f) for f in DeltaTable(str(table["latest"])).file_uris()}
        stored = {f for f in os.listdir(table["latest"]) if f.endswith(".parquet")}
        assert stored == live, f"VACUUM left only the files of the latest version: {stored - live}"
        check_latest(gateway, name, log, f"seed {seed}: after OPTIMIZE and VACUUM of the kept rows")

        # As of a time and under a token, the history answers, as before.
        as_of = now - HOUR_MS + 75 * 10
        check_latest(gateway, name, log, f"seed {seed}: as of {as_of}", as_of_ms=as_of)
        replayed = rows(gateway, latest_sql(name), token=token)
        before = Log()
        before.records = {k: r for k, r in log.records.items() if r["timestamp"] < now - MINUTE_MS}
        compare(replayed, project(before.latest()), f"seed {seed}: the token taken before the merge")
    finally:
        gateway.stop()


def test_kept_rows_of_a_history_created_again_are_not_read(brokers, changelog_users):
    table, (seed, rng) = changelog_users, seeded()
    topic, name = table["topic"], table["name"]
    work, log = Workload(rng, keys=20), Log()
    log.add(produce_acked(brokers, topic, work.records(200, now_ms() - HOUR_MS)))
    gateway = lake_gateway(brokers, table)
    try:
        tier(brokers, table)
        first = covered(table)
        # The history is deleted, a new topic of the same name is not needed: the compactor tiers the
        # same records into a new history table (another Delta id) from Kafka's log start.
        shutil.rmtree(table["path"])
        delete_records(brokers, topic, 0, first[0] // 2)
        log.records = {(p, o): r for (p, o), r in log.records.items() if not (p == 0 and o < first[0] // 2)}
        tier(brokers, table)
        assert covered(table) == lake_marks(table), (covered(table), lake_marks(table))
        assert kept_rows(table) == newest_per_key_and_partition(log, lake_marks(table)), f"seed {seed}"
        check_latest(gateway, name, log, f"seed {seed}: a history created again")
    finally:
        gateway.stop()



def test_a_decoded_key_is_one_key_under_two_key_schema_versions(brokers, registry, tmp_path):
    """Where the table has a key format, the decoded `key` says which key a record is of, not the raw bytes:
    registry-framed keys carry their schema id, so one key written under two versions of the key schema is
    two `_key` values but one key. A key that does not decode is its bytes. From Kafka, for `latest()` of a
    registry topic and for a declared upsert table, and from the compactor's kept rows (kept per raw key)."""
    topic = unique("chl-keyed")
    create_topic(brokers, topic, partitions=2)
    client = SchemaRegistryClient({"url": registry})
    key_v1 = {"type": "record", "name": "UserKey", "fields": [{"name": "id", "type": "long"}]}
    key_v2 = dict(key_v1, fields=key_v1["fields"] + [{"name": "region", "type": "string", "default": "eu"}])
    user = {"type": "record", "name": "User", "fields": [{"name": "name", "type": "string"}]}
    keys = {1: AvroSerializer(client, json.dumps(key_v1)), 2: AvroSerializer(client, json.dumps(key_v2))}
    values = AvroSerializer(client, json.dumps(user))
    key_context = SerializationContext(topic, MessageField.KEY)
    value_context = SerializationContext(topic, MessageField.VALUE)
    model = {}  # id (None: the undecodable key) → its newest name, None once deleted

    def put(version, i, name, partition=None):
        key = b"\x07bad" if i is None else keys[version]({"id": i, "region": "eu"} if version == 2 else {"id": i},
                                                          key_context)
        value = None if name is None else values({"name": name}, value_context)
        model[i] = name
        return {"partition": (i or 0) % 2 if partition is None else partition, "key": key, "value": value}

    produce(brokers, topic, [put(1, i, f"a{i}") for i in range(10)] + [put(1, None, "x1")])
    produce(brokers, topic, [put(2, i, f"b{i}") for i in range(5)] + [put(2, 5, None), put(2, None, "x2")])
    assert len(client.get_versions(f"{topic}-key")) == 2

    def want():
        return sorted(((i, name) for i, name in model.items() if name is not None), key=str)

    def got(gateway, source):
        answer = rows(gateway, f"SELECT key, name, _error FROM {source}")
        assert all((r["_error"] is None) == (r["key"] is not None) for r in answer), answer
        return sorted(((r["key"]["id"] if r["key"] else None, r["name"]) for r in answer), key=str)

    lake = tmp_path / "lake"
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry, "--lake", str(lake)])
    try:
        assert got(gateway, f"latest('{topic}')") == want(), "latest() of the registry topic"
        name = "keyed_" + topic.split("-")[-1]
        rows(gateway, f"CREATE EXTERNAL TABLE {name} STORED AS KAFKA LOCATION '{topic}' OPTIONS "
                      "('value.format' 'avro-confluent', 'key.format' 'avro-confluent', 'changelog' 'upsert')")
        assert got(gateway, name) == want(), "the declared upsert table, from Kafka"

        config = tmp_path / "empty.toml"
        config.write_text("")
        run = compactor(brokers, lake, config, "--tier-after", "0s", "--schema-registry", registry)
        assert run.returncode == 0 and "latest rows:" in run.stdout, (run.stdout, run.stderr)
        kept = DeltaTable(str(lake / "latest" / name)).to_pyarrow_table(columns=["_key"]).num_rows
        assert kept == 17, f"kept per raw key (10 ids, 6 again under v2, a tombstone among them, a bad key): {kept}"
        explain = "\n".join(r["plan"] for r in rows(gateway, f"EXPLAIN SELECT * FROM {name}"))
        assert f"latest({name})" in explain, explain
        assert got(gateway, name) == want(), "the kept rows"
        # An update under the first version again, above what the kept rows cover.
        produce(brokers, topic, [put(1, 3, "c3"), put(1, 7, "c7")])
        assert got(gateway, name) == want(), "the kept rows and Kafka"
    finally:
        gateway.stop()
