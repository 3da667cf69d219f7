"""Streaming queries: `tail(table [, start])` over ADBC (and pyarrow.flight) against the real gateway.

Every read here has a deadline: a watchdog cancels the statement (ADBC's StatementCancel, which
unblocks a `read_next_batch` waiting in another thread) and the test fails saying what was
missing, so no test can hang on a stream that never ends."""

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as fl
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions
from deltalake import DeltaTable

from conftest import (DEADLINE_S, Gateway, create_topic, delete_records, flight_sql_command, produce,
                      protobuf_field, unique)
from test_compactor import PARTITIONS, compactor, offsets_of, orders, table  # noqa: F401 (fixture)

READ_S = 15  # deadline of one read (generous: a debug gateway on a busy 2-core machine)
RELEASE_S = 3  # a closed stream's row leaves system.streams within this (the contract says ~1 s)
COLUMNS = "id BIGINT, customer VARCHAR, amount DOUBLE"


# ---------------------------------------------------------------------------------------------
# Helpers


def order(i, partition=None, timestamp=None):
    record = {
        "partition": i % 3 if partition is None else partition,
        "key": f"k{i}".encode(),
        "value": json.dumps({"id": i, "customer": f"c{i % 5}", "amount": i * 1.5}).encode(),
        "headers": [("n", str(i).encode())],
    }
    if timestamp is not None:
        record["timestamp"] = timestamp
    return record


def produce_acked(brokers, topic, records):
    """Produces `records` (dicts as conftest.produce takes) and returns {(partition, offset): record}
    as the broker acknowledged them."""
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    acked, errors = {}, []

    def on_delivery(record):
        def callback(err, msg):
            if err is not None:
                errors.append(err)
            else:
                acked[(msg.partition(), msg.offset())] = record
        return callback

    for r in records:
        producer.produce(
            topic, value=r.get("value"), key=r.get("key"), partition=r.get("partition", 0),
            headers=r.get("headers"), timestamp=r.get("timestamp", int(time.time() * 1000)),
            on_delivery=on_delivery(r),
        )
    remaining = producer.flush(DEADLINE_S)
    assert remaining == 0 and not errors, f"undelivered: {remaining}, errors: {errors}"
    assert len(acked) == len(records)
    return acked


def by_partition(rows):
    """{partition: [offsets in arrival order]} of rows with _partition and _offset."""
    out = {}
    for r in rows:
        out.setdefault(r["_partition"], []).append(r["_offset"])
    return out


def assert_exactly(rows, acked, what):
    """`rows` are exactly the `acked` (partition, offset)s, each once, in offset order per partition."""
    got = by_partition(rows)
    want = {}
    for p, o in sorted(acked):
        want.setdefault(p, []).append(o)
    for p, offsets in got.items():
        assert offsets == sorted(offsets), f"{what}: partition {p} out of offset order: {offsets}"
        assert len(offsets) == len(set(offsets)), f"{what}: partition {p} has duplicates: {offsets}"
    assert got == want, f"{what}: got {got}, expected {want}"


def ts_literal(ms):
    """A SQL timestamp literal (UTC, millisecond precision) for epoch milliseconds."""
    text = datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return f"TIMESTAMP '{text}'"


def query(gateway, sql):
    with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def stream_count(gateway):
    return query(gateway, "SELECT count(*) AS n FROM system.streams").column("n")[0].as_py()


def wait_for_streams(gateway, n, within=READ_S):
    """Polls system.streams (on its own connection) until it has `n` rows; returns the seconds it took."""
    started = time.monotonic()
    seen = None
    while time.monotonic() - started < within:
        seen = stream_count(gateway)
        if seen == n:
            return time.monotonic() - started
        time.sleep(0.05)
    rows = query(gateway, "SELECT * FROM system.streams").to_pylist()
    raise AssertionError(f"system.streams has {seen} rows after {within} s, expected {n}: {rows}")


class Stream:
    """One streaming query over ADBC: `cur.execute(sql)`, then `cur.fetch_record_batch()`."""

    def __init__(self, gateway, sql):
        self.sql = sql
        self.rows = []
        self.ended = False
        self.conn = flightsql.connect(gateway.uri, autocommit=True)
        self.cur = self.conn.cursor()
        try:
            self.cur.execute(sql)
            self.reader = self.cur.fetch_record_batch()
        except BaseException:
            self.close()
            raise

    @property
    def schema(self):
        return self.reader.schema

    def _read(self, want, timeout, until_end=False):
        """Reads batches until `want` more rows arrived (or the stream ends, if `until_end`).
        Returns (new rows, 'rows' | 'end' | 'deadline'). At the deadline the statement is
        cancelled, so the stream cannot be read after a 'deadline'."""
        start = len(self.rows)
        fired = threading.Event()

        def cancel():
            fired.set()
            self.cur.adbc_cancel()

        timer = threading.Timer(timeout, cancel)
        timer.daemon = True
        timer.start()
        try:
            while until_end or len(self.rows) - start < want:
                try:
                    batch = self.reader.read_next_batch()
                except StopIteration:
                    self.ended = True
                    return self.rows[start:], "end"
                except Exception:
                    if fired.is_set():
                        return self.rows[start:], "deadline"
                    raise
                self.rows.extend(batch.to_pylist())
            return self.rows[start:], "rows"
        finally:
            timer.cancel()

    def read(self, n, timeout=READ_S):
        """At least `n` more rows (all of the last batch read): fails clearly if they do not come."""
        rows, how = self._read(n, timeout)
        if how != "rows":
            ended = "the stream ended" if how == "end" else f"nothing more within {timeout} s"
            raise AssertionError(
                f"{self.sql}: {len(rows)} of {n} rows arrived, then {ended}; last rows: {rows[-3:]}"
            )
        return rows

    def read_to_end(self, timeout=READ_S):
        rows, how = self._read(0, timeout, until_end=True)
        assert how == "end", f"{self.sql}: still open after {timeout} s and {len(rows)} rows"
        return rows

    def drain(self, seconds):
        """Whatever arrives within `seconds`; the stream is cancelled afterwards."""
        return self._read(0, seconds, until_end=True)[0]

    def close(self):
        for thing in ("reader", "cur", "conn"):
            try:
                getattr(self, thing).close()
            except Exception:
                pass


class Env:
    """Gateways and streams of one test, stopped and closed when it ends (streams first)."""

    def __init__(self, brokers):
        self.brokers = brokers
        self.gateways = []
        self.streams = []

    def gateway(self, config=None, *args):
        gateway = Gateway(self.brokers, config, args)
        self.gateways.append(gateway)
        return gateway

    def stream(self, gateway, sql):
        stream = Stream(gateway, sql)
        self.streams.append(stream)
        return stream

    def json_table(self, partitions=3, *gateway_args):
        """A fresh topic declared as a JSON table, and a gateway serving it: (gateway, name, topic)."""
        topic = unique("tail")
        create_topic(self.brokers, topic, partitions=partitions)
        name = "t_" + topic.split("-")[-1]
        config = f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\ncolumns = "{COLUMNS}"\n'
        return self.gateway(config, *gateway_args), name, topic

    def close(self):
        for stream in self.streams:
            stream.close()
        for gateway in self.gateways:
            gateway.stop()


@pytest.fixture()
def env(brokers):
    env = Env(brokers)
    yield env
    env.close()


# ---------------------------------------------------------------------------------------------
# Start positions


def test_latest_gets_only_records_produced_after_the_stream_started(env, brokers):
    gateway, name, topic = env.json_table()
    produce_acked(brokers, topic, [order(i) for i in range(30)])
    stream = env.stream(gateway, f"SELECT _partition, _offset, id FROM tail('{name}')")
    wait_for_streams(gateway, 1)
    after = produce_acked(brokers, topic, [order(i) for i in range(100, 130)])
    rows = stream.read(30)
    # Offset order per partition: an earlier record would have come before these and taken a place.
    assert_exactly(rows, after, "tail from latest")
    assert sorted(r["id"] for r in rows) == list(range(100, 130))


def test_earliest_gets_everything_then_follows(env, brokers):
    gateway, name, topic = env.json_table()
    before = produce_acked(brokers, topic, [order(i) for i in range(30)])
    stream = env.stream(gateway, f"SELECT _partition, _offset, id FROM tail('{name}', 'earliest')")
    assert_exactly(stream.read(30), before, "tail from earliest, history")
    later = produce_acked(brokers, topic, [order(i) for i in range(30, 45)])
    rows = stream.read(15)
    assert_exactly(rows, later, "tail from earliest, then new records")
    assert sorted(r["id"] for r in stream.rows) == list(range(45))


def test_an_offset_start_gets_exactly_the_right_first_record_per_partition(env, brokers):
    gateway, name, topic = env.json_table()
    acked = produce_acked(brokers, topic, [order(i) for i in range(30)])  # 10 per partition
    one = env.stream(
        gateway, f"SELECT _partition, _offset, id FROM tail('{name}', 'earliest') WHERE _partition = 1 AND _offset >= 4"
    )
    rows = one.read(6)
    assert (rows[0]["_partition"], rows[0]["_offset"]) == (1, 4), rows[0]
    assert rows[0]["id"] == json.loads(acked[(1, 4)]["value"])["id"]
    assert_exactly(rows, {k for k in acked if k[0] == 1 and k[1] >= 4}, "partition 1 from offset 4")

    # A start offset per partition; partition 1 not at all.
    two = env.stream(
        gateway,
        f"SELECT _partition, _offset FROM tail('{name}', 'earliest') "
        "WHERE (_partition = 0 AND _offset >= 3) OR (_partition = 2 AND _offset >= 7)",
    )
    rows = two.read(7 + 3)
    assert {p: offsets[0] for p, offsets in by_partition(rows).items()} == {0: 3, 2: 7}
    assert_exactly(rows, {k for k in acked if (k[0] == 0 and k[1] >= 3) or (k[0] == 2 and k[1] >= 7)},
                   "partitions 0 from 3 and 2 from 7")
    # New records follow on the chosen partitions only (partition 1's last, so its absence shows).
    produce_acked(brokers, topic, [order(100, partition=0), order(101, partition=2)])
    produce_acked(brokers, topic, [order(102, partition=1)])
    new = two.read(2)
    new += two.drain(1.0)
    assert sorted((r["_partition"], r["_offset"]) for r in new) == [(0, 10), (2, 10)], new


def test_a_timestamp_start_gets_the_first_record_at_or_after_it_per_partition(env, brokers):
    gateway, name, topic = env.json_table()
    base = int(time.time() * 1000) - 60_000
    # Partition p, record j: stamped base + j s + p * 300 ms (rising within each partition).
    records = [order(10 * p + j, partition=p, timestamp=base + j * 1000 + p * 300) for p in range(3) for j in range(10)]
    acked = produce_acked(brokers, topic, records)
    t = base + 4500
    # First at or after t: partition 0 at j=5 (5000), 1 at j=5 (5300; 4300 is before), 2 at j=4 (4600).
    first = {0: 5, 1: 5, 2: 4}
    stream = env.stream(gateway, f"SELECT _partition, _offset, _timestamp, id FROM tail('{name}', {ts_literal(t)})")
    rows = stream.read(5 + 5 + 6)
    got_first = {p: offsets[0] for p, offsets in by_partition(rows).items()}
    assert got_first == first, f"first offsets {got_first}, expected {first} (start {ts_literal(t)})"
    assert_exactly(rows, {(p, o) for (p, o) in acked if o >= first[p]}, "tail from a timestamp")
    for r in rows:
        assert r["_timestamp"].timestamp() * 1000 >= t, r


# ---------------------------------------------------------------------------------------------
# Delivery


def test_records_produced_while_streaming_arrive_once_in_offset_order(env, brokers):
    gateway, name, topic = env.json_table()
    stream = env.stream(gateway, f"SELECT _partition, _offset, id FROM tail('{name}')")
    wait_for_streams(gateway, 1)
    acked, errors = {}, []

    def producer_thread():
        try:
            for burst in range(20):  # 600 records over about 2 s
                acked.update(produce_acked(brokers, topic, [order(i) for i in range(burst * 30, burst * 30 + 30)]))
                time.sleep(0.1)
        except Exception as e:  # surfaced below
            errors.append(e)

    thread = threading.Thread(target=producer_thread, daemon=True)
    thread.start()
    rows = stream.read(600, timeout=READ_S + 10)
    thread.join(DEADLINE_S)
    assert not errors, errors
    assert len(rows) == 600, f"{len(rows)} rows for 600 records"
    assert_exactly(rows, acked, "records produced while streaming")
    for r in rows:
        assert json.loads(acked[(r["_partition"], r["_offset"])]["value"])["id"] == r["id"]


def test_filters_projections_and_expressions_apply(env, brokers):
    gateway, name, topic = env.json_table()
    produce_acked(brokers, topic, [order(i) for i in range(30)])
    stream = env.stream(
        gateway,
        f"SELECT id * 2 AS twice, upper(customer) AS who, _offset + 1 AS next "
        f"FROM tail('{name}', 'earliest') WHERE amount >= 30 AND customer <> 'c1'",
    )
    expected = sorted((i * 2, f"C{i % 5}") for i in range(30) if i * 1.5 >= 30 and i % 5 != 1)
    rows = stream.read(len(expected))
    assert stream.schema.names == ["twice", "who", "next"]
    assert sorted((r["twice"], r["who"]) for r in rows) == expected


def test_a_quiet_topic_is_not_a_stalled_read(env, brokers):
    # A batch scan fails when nothing arrives for --kafka-fetch-timeout; a stream waits for records.
    gateway, name, topic = env.json_table(3, "--kafka-fetch-timeout", "1s")
    stream = env.stream(gateway, f"SELECT _partition, _offset FROM tail('{name}')")
    wait_for_streams(gateway, 1)
    time.sleep(3)
    acked = produce_acked(brokers, topic, [order(0)])
    assert_exactly(stream.read(1), acked, "a record after a quiet spell")


def test_limit_ends_the_stream(env, brokers):
    gateway, name, topic = env.json_table()
    produce_acked(brokers, topic, [order(i) for i in range(10)])
    history = env.stream(gateway, f"SELECT id FROM tail('{name}', 'earliest') LIMIT 4")
    assert len(history.read_to_end()) == 4
    # From latest: the stream waits for records, and ends at the fifth.
    waiting = env.stream(gateway, f"SELECT _partition, _offset FROM tail('{name}') LIMIT 5")
    wait_for_streams(gateway, 1)
    new = produce_acked(brokers, topic, [order(i) for i in range(10, 18)])
    rows = waiting.read_to_end()
    assert len(rows) == 5, rows
    assert {(r["_partition"], r["_offset"]) for r in rows} <= set(new), "only records produced after it started"
    wait_for_streams(gateway, 0, within=RELEASE_S)


# ---------------------------------------------------------------------------------------------
# Ending, limits, system.streams


def test_system_streams_shows_each_running_stream(env, brokers):
    gateway, name, topic = env.json_table()
    produce_acked(brokers, topic, [order(i) for i in range(12)])
    before = time.time()
    stream = env.stream(gateway, f"SELECT * FROM tail('{name}', 'earliest')")
    stream.read(12)
    table = query(gateway, 'SELECT id, "table", started_at, records FROM system.streams')
    types = {f.name: str(f.type) for f in table.schema}
    assert types["id"] == "int64" and types["table"] == "string" and types["records"] == "int64", types
    assert types["started_at"].startswith("timestamp["), types
    rows = table.to_pylist()
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["table"] == name and row["records"] >= 12, row
    started = row["started_at"]
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    assert before - 2 <= started.timestamp() <= time.time() + 2, (before, started)
    # A second stream is a second row, with its own id.
    env.stream(gateway, f"SELECT _offset FROM tail('{name}')")
    wait_for_streams(gateway, 2)
    ids = query(gateway, "SELECT id FROM system.streams").column("id").to_pylist()
    assert len(set(ids)) == 2, ids


@pytest.mark.parametrize("how", ["reader.close", "connection.close", "flight cancel", "client killed"])
def test_closing_the_stream_releases_it(env, brokers, how):
    gateway, name, topic = env.json_table()
    produce_acked(brokers, topic, [order(i) for i in range(6)])
    sql = f"SELECT _offset, id FROM tail('{name}', 'earliest')"
    if how == "flight cancel":
        client = fl.FlightClient(gateway.uri)
        try:
            reader = flight_do_get(client, sql)
            seen = 0
            while seen < 6:
                seen += reader.read_chunk().data.num_rows
            wait_for_streams(gateway, 1)
            reader.cancel()
            elapsed = wait_for_streams(gateway, 0, within=RELEASE_S)
        finally:
            client.close()
    elif how == "client killed":
        # Another process reads the stream and is killed: the gateway sees the connection drop.
        child = subprocess.Popen([sys.executable, "-c", CHILD, gateway.uri, sql], stdout=subprocess.PIPE, text=True)
        try:
            line = read_line(child, READ_S)
            assert line == "read 6", f"the client said {line!r}"
            wait_for_streams(gateway, 1)
            child.send_signal(signal.SIGKILL)
            child.wait(DEADLINE_S)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(DEADLINE_S)
        elapsed = wait_for_streams(gateway, 0, within=RELEASE_S)
    else:
        stream = env.stream(gateway, sql)
        stream.read(6)
        wait_for_streams(gateway, 1)
        if how == "reader.close":
            stream.reader.close()
        else:
            stream.cur.close()
            stream.conn.close()
        elapsed = wait_for_streams(gateway, 0, within=RELEASE_S)
    print(f"released {elapsed:.2f} s after {how}")
    # The gateway still serves: a new stream gets the same records.
    assert len(env.stream(gateway, sql).read(6)) == 6


CHILD = """
import sys
import adbc_driver_flightsql.dbapi as flightsql
conn = flightsql.connect(sys.argv[1], autocommit=True)
cur = conn.cursor()
cur.execute(sys.argv[2])
reader = cur.fetch_record_batch()
seen = 0
while seen < 6:
    seen += reader.read_next_batch().num_rows
print(f"read {seen}", flush=True)
reader.read_next_batch()  # blocks until killed
"""


def read_line(process, timeout):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("line", process.stdout.readline()), daemon=True)
    thread.start()
    thread.join(timeout)
    return out.get("line", "").strip()


def flight_do_get(client, sql):
    """A Flight SQL statement through plain pyarrow.flight: GetFlightInfo(CommandStatementQuery), DoGet."""
    info = client.get_flight_info(fl.FlightDescriptor.for_command(flight_sql_command(sql)))
    return client.do_get(info.endpoints[0].ticket)


def test_one_stream_over_max_streams_is_resource_exhausted(env, brokers):
    gateway, name, topic = env.json_table(3, "--max-streams", "2")
    sql = f"SELECT _offset FROM tail('{name}')"
    first, second = env.stream(gateway, sql), env.stream(gateway, sql)
    wait_for_streams(gateway, 2)
    error = None
    try:
        third = env.stream(gateway, sql)
        rows, how = third._read(1, 10)
        raise AssertionError(f"a third stream was accepted with --max-streams 2 ({how}, {rows})")
    except AssertionError:
        raise
    except Exception as e:
        error = str(e)
    assert "ResourceExhausted" in error or "RESOURCE_EXHAUSTED" in error, error
    assert "max-streams" in error, error
    assert stream_count(gateway) == 2
    # A slot freed is a slot usable.
    first.close()
    wait_for_streams(gateway, 1, within=RELEASE_S)
    fourth = env.stream(gateway, sql)
    wait_for_streams(gateway, 2)
    produce_acked(brokers, topic, [order(0)])
    assert len(fourth.read(1)) == 1 and len(second.read(1)) == 1


@pytest.fixture(scope="module")
def refusing(brokers):
    env = Env(brokers)
    gateway, name, _ = env.json_table()
    yield gateway, name
    env.close()


@pytest.mark.parametrize("shape", [
    "SELECT count(*) FROM tail('{t}')",
    "SELECT customer, sum(amount) FROM tail('{t}') GROUP BY customer",
    "SELECT * FROM tail('{t}') ORDER BY _offset",
    "SELECT a.id FROM tail('{t}') a JOIN {t} b ON a.id = b.id",
    "SELECT DISTINCT customer FROM tail('{t}')",
    "SELECT id, row_number() OVER (PARTITION BY customer ORDER BY _offset) FROM tail('{t}')",
], ids=["count", "group by", "order by", "join", "distinct", "window"])
def test_what_cannot_stream_is_refused_at_planning(refusing, shape):
    gateway, name = refusing
    sql = shape.format(t=name)
    with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
        try:
            cur.execute(sql)  # planning happens here; nothing is read
            raise AssertionError(f"{sql} was accepted")
        except flightsql.ProgrammingError as e:
            message = str(e)
    assert "InvalidArgument" in message or "INVALID_ARGUMENT" in message, message
    assert "streaming query" in message, message
    assert stream_count(gateway) == 0


# ---------------------------------------------------------------------------------------------
# Tables: columns, decoding, the lake tier, partitions


def test_a_json_stream_has_the_tables_columns_and_error_rows(env, brokers):
    gateway, name, topic = env.json_table(1)
    records = [order(0, partition=0), {"partition": 0, "key": b"bad", "value": b"{oops"}, order(2, partition=0)]
    produce_acked(brokers, topic, records)
    batch_schema = query(gateway, f"SELECT * FROM {name} LIMIT 0").schema
    stream = env.stream(gateway, f"SELECT * FROM tail('{name}', 'earliest')")
    assert stream.schema.names == batch_schema.names
    assert stream.schema.names == [
        "_partition", "_offset", "_timestamp", "_key", "_headers", "id", "customer", "amount", "_error", "_value"
    ]
    assert [str(t) for t in stream.schema.types] == [str(t) for t in batch_schema.types]
    rows = stream.read(3)
    assert [r["_offset"] for r in rows] == [0, 1, 2]
    bad = rows[1]
    assert bad["id"] is None and bad["_error"] and "invalid JSON" in bad["_error"], bad
    assert bad["_value"] == b"{oops" and bad["_key"] == b"bad"
    assert rows[0]["_error"] is None and rows[0]["id"] == 0 and rows[2]["id"] == 2
    assert rows[0]["_headers"] == [{"key": "n", "value": b"0"}]


def test_a_raw_topic_streams_its_bytes(env, brokers):
    topic = "tailraw_" + unique("x").split("-")[-1]
    create_topic(brokers, topic, partitions=2)
    gateway = env.gateway()
    produce_acked(brokers, topic, [
        {"partition": 1, "key": b"k", "value": b"\x00\x01v", "headers": [("h", b"1"), ("h", None)]},
        {"partition": 0, "key": None, "value": None},
    ])
    stream = env.stream(gateway, f"SELECT * FROM tail('{topic}', 'earliest')")
    assert stream.schema.names == ["_partition", "_offset", "_timestamp", "_key", "_value", "_headers"]
    rows = sorted(stream.read(2), key=lambda r: r["_partition"])
    assert (rows[0]["_key"], rows[0]["_value"]) == (None, None)
    assert rows[1]["_value"] == b"\x00\x01v"
    assert rows[1]["_headers"] == [{"key": "h", "value": b"1"}, {"key": "h", "value": None}]


def test_replay_from_the_lake_then_follow_kafka(env, brokers, table):
    now = int(time.time() * 1000) - 10_000  # orders() stamps record i at now + i ms: all older than now
    produce(brokers, table["topic"], orders(90, now_ms=now))  # 30 per partition, offset i // 3
    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s")
    assert run.returncode == 0, run.stderr
    produce(brokers, table["topic"], orders(30, start=90, now_ms=now))  # only in Kafka
    dt = DeltaTable(str(table["path"]))
    watermarks = {p: dt.transaction_version(f"kappa/{table['name']}/{p}") for p in range(PARTITIONS)}
    assert watermarks == {0: 30, 1: 30, 2: 30}, watermarks
    # Kafka forgets tiered history: partitions 0 and 1 start at their watermarks.
    delete_records(brokers, table["topic"], 0, watermarks[0])
    delete_records(brokers, table["topic"], 1, watermarks[1])
    assert offsets_of(brokers, table["topic"])[0][0] == 30

    gateway = env.gateway(table["config"].read_text(), "--lake", str(table["lake"]))
    name = table["name"]

    def expected_id(p, o):
        i = 3 * o + p
        return None if i in (45, 90 + 15) else i  # orders() poisons the middle record of each call

    stream = env.stream(gateway, f"SELECT _partition, _offset, id FROM tail('{name}', 'earliest')")
    rows = stream.read(120)
    assert_exactly(rows, {(p, o) for p in range(3) for o in range(40)}, "lake then Kafka")
    assert all(r["id"] == expected_id(r["_partition"], r["_offset"]) for r in rows)
    # Following: new records come after the replayed ones, once.
    produce(brokers, table["topic"], orders(15, start=120, now_ms=now))
    follow = stream.read(15)
    assert_exactly(follow, {(p, o) for p in range(3) for o in range(40, 45)}, "following after the replay")

    # A timestamp start inside the lake.
    t = now + 31  # partition 0 from i=33 (offset 11), 1 from i=31 (10), 2 from i=32 (10)
    by_time = env.stream(gateway, f"SELECT _partition, _offset FROM tail('{name}', {ts_literal(t)})")
    rows = by_time.read(34 + 35 + 35)
    assert {p: offsets[0] for p, offsets in by_partition(rows).items()} == {0: 11, 1: 10, 2: 10}
    assert_exactly(rows, {(p, o) for p in range(3) for o in range(11 if p == 0 else 10, 45)},
                   "from a timestamp in the lake")

    # An offset start below Kafka's log start (history only the lake has).
    by_offset = env.stream(
        gateway, f"SELECT _partition, _offset FROM tail('{name}', 'earliest') WHERE _partition = 0 AND _offset >= 5"
    )
    rows = by_offset.read(40)
    assert_exactly(rows, {(0, o) for o in range(5, 45)}, "partition 0 from offset 5, deleted from Kafka")


def test_a_partition_added_while_streaming_is_picked_up(env, brokers):
    topic = "tailgrow_" + unique("x").split("-")[-1]
    create_topic(brokers, topic, partitions=1)
    gateway = env.gateway(None, "--topic-refresh", "1s")
    stream = env.stream(gateway, f"SELECT _partition, _offset, _value FROM tail('{topic}')")
    wait_for_streams(gateway, 1)
    admin = AdminClient({"bootstrap.servers": brokers})
    try:
        for future in admin.create_partitions([NewPartitions(topic, 2)], operation_timeout=DEADLINE_S).values():
            future.result(timeout=DEADLINE_S)
    except Exception as why:
        pytest.skip(f"the test broker cannot add partitions to a topic: {why}")
    produce_acked(brokers, topic, [{"partition": 1, "value": b"new"}, {"partition": 0, "value": b"old"}])
    rows = stream.read(2, timeout=READ_S)
    assert sorted((r["_partition"], r["_value"]) for r in rows) == [(0, b"old"), (1, b"new")]


def test_cancel_flight_info_stops_the_stream(env, brokers):
    """CancelFlightInfo (pyarrow.flight's do_action, as JDBC and Go clients send it) ends the
    stream with Cancelled and releases its consumer."""
    gateway, name, topic = env.json_table()
    produce_acked(brokers, topic, [order(i) for i in range(6)])
    client = fl.FlightClient(gateway.uri)
    try:
        sql = f"SELECT _offset FROM tail('{name}', 'earliest')"
        info = client.get_flight_info(fl.FlightDescriptor.for_command(flight_sql_command(sql)))
        reader = client.do_get(info.endpoints[0].ticket)
        seen = 0
        while seen < 6:
            seen += reader.read_chunk().data.num_rows
        wait_for_streams(gateway, 1)
        results = list(client.do_action(fl.Action("CancelFlightInfo", protobuf_field(1, info.serialize()))))
        assert len(results) == 1 and results[0].body.to_pybytes() == b"\x08\x01"  # CANCEL_STATUS_CANCELLED
        with pytest.raises(fl.FlightCancelledError):
            while True:
                reader.read_chunk()
        wait_for_streams(gateway, 0, within=RELEASE_S)
        # A query that is not running (any more) is not found.
        with pytest.raises(KeyError, match="no such query"):  # pyarrow raises NOT_FOUND as a KeyError
            list(client.do_action(fl.Action("CancelFlightInfo", protobuf_field(1, info.serialize()))))
    finally:
        client.close()


def test_a_broker_outage_ends_the_stream_with_unavailable(tmp_path):
    """A stream survives a quiet topic, but not brokers that stay down: after the fetch timeout it
    fails with Unavailable (a client can tell it from an end)."""
    root = Path(__file__).resolve().parents[2]
    started = subprocess.run(["bash", str(root / "scripts" / "broker.sh"), "start", "0"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    brokers = started.stdout.strip()
    port = brokers.rsplit(":", 1)[1]
    env = Env(brokers)
    try:
        gateway, name, topic = env.json_table(3, "--kafka-fetch-timeout", "2s", "--kafka-request-timeout", "1s",
                                              "--topic-refresh", "1s")
        produce_acked(brokers, topic, [order(i) for i in range(3)])
        stream = env.stream(gateway, f"SELECT _offset FROM tail('{name}', 'earliest')")
        assert len(stream.read(3)) == 3
        subprocess.run(["bash", str(root / "scripts" / "broker.sh"), "stop", port], check=True, timeout=60)
        began = time.monotonic()
        with pytest.raises((flightsql.Error, OSError)) as failed:  # ADBC raises Unavailable as an OSError
            stream.read(1, timeout=30)
        assert "(Unavailable;" in str(failed.value) and "lost the brokers" in str(failed.value), str(failed.value)
        assert time.monotonic() - began < 15
    finally:
        env.close()
        subprocess.run(["bash", str(root / "scripts" / "broker.sh"), "stop", port], timeout=60)
