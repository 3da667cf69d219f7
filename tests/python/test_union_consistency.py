"""The lake + Kafka union stays exact while everything moves at once: a producer writes
continuously, a compactor tiers every second (`--every 1s --tier-after 0s`), and a gateway with
`--lake` on the same folder answers `SELECT _partition, _offset` over and over. Every answer must
be the whole log of its snapshot: each offset once, per partition exactly 0..max (the topic is not
compacted and nothing is deleted), nothing the producer had not been acked for, and everything it
had been acked for before the query started."""

import contextlib
import json
import os
import subprocess
import threading
import time
from collections import Counter

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.compute as pc
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from deltalake import DeltaTable

from conftest import DEADLINE_S, Gateway, create_topic, unique

PARTITIONS = 3
RATE = 300  # records/s, keyed over all partitions
QUERIES = 200
QUERY_PHASE_S = 40  # stop issuing queries after this long, however many ran or moves were seen
MIN_QUERIES = 50
MIN_WATERMARK_SETS = 6  # distinct non-zero watermark sets the queries see


class BackgroundProducer:
    """Produces keyed JSON records at about `rate` per second on its own thread, and keeps the
    (partition, offset) of every acked record."""

    def __init__(self, brokers, topic, rate):
        self._producer = Producer({
            "bootstrap.servers": brokers, "linger.ms": 5, "enable.idempotence": True,
        })
        self._topic = topic
        self._rate = rate
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.acked = {p: set() for p in range(PARTITIONS)}
        self._max = {p: -1 for p in range(PARTITIONS)}
        self.errors = []
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _on_delivery(self, err, msg):
        if err is not None:
            self.errors.append(str(err))
            return
        with self._lock:
            self.acked[msg.partition()].add(msg.offset())
            self._max[msg.partition()] = max(self._max[msg.partition()], msg.offset())

    def _run(self):
        try:
            started = time.monotonic()
            while not self._stop.is_set():
                due = int((time.monotonic() - started) * self._rate)
                while self.sent < due:
                    i = self.sent
                    value = json.dumps({"id": i, "amount": i * 0.5}).encode()
                    self._producer.produce(self._topic, key=f"k{i}".encode(), value=value,
                                           on_delivery=self._on_delivery)
                    self.sent += 1
                self._producer.poll(0.01)
        except Exception as e:  # reported by stop()
            self.errors.append(f"producer thread: {e!r}")
        finally:
            remaining = self._producer.flush(DEADLINE_S)
            if remaining:
                self.errors.append(f"{remaining} records undelivered at the end")

    def acked_max(self):
        """Per partition, the highest offset acked so far (-1: none)."""
        with self._lock:
            return dict(self._max)

    def stop(self):
        self._stop.set()
        self._thread.join(DEADLINE_S * 2)
        assert not self._thread.is_alive(), "the producer thread did not stop"


class Compactor:
    """`kappa-compactor run --every 1s --tier-after 0s`, output in files under `folder`."""

    def __init__(self, brokers, lake, config, folder):
        binary = os.environ.get("KAPPA_COMPACTOR_BIN")
        if not binary:
            pytest.fail("KAPPA_COMPACTOR_BIN is not set: run scripts/test.sh", pytrace=False)
        self.stdout_path = folder / "compactor.out"
        self.stderr_path = folder / "compactor.err"
        args = [binary, "run", "--every", "1s", "--tier-after", "0s", "--brokers", brokers,
                "--lake", str(lake), "--config", str(config)]
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(args, stdout=out, stderr=err,
                                            env=dict(os.environ, KAPPA_LOG="warn"))

    def output(self):
        return (f"stdout (last lines):\n{tail(self.stdout_path)}\n"
                f"stderr (last lines):\n{tail(self.stderr_path)}")

    def assert_running(self):
        code = self.process.poll()
        assert code is None, f"the compactor exited with {code}\n{self.output()}"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: stops between tables
            try:
                self.process.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(DEADLINE_S)


def tail(path, lines=15):
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError as e:
        return f"({e})"


class LakeWatermarks:
    """Each partition's watermark in the latest Delta version, as an independent reader
    (the `deltalake` package) sees it; 0 before the table exists or a partition is tiered."""

    def __init__(self, path, table):
        self._path = path
        self._table = table
        self._dt = None

    def read(self):
        if self._dt is None:
            if not (self._path / "_delta_log").is_dir():
                return {p: 0 for p in range(PARTITIONS)}, -1
            try:
                self._dt = DeltaTable(str(self._path))
            except Exception:  # the log folder exists before its first commit
                return {p: 0 for p in range(PARTITIONS)}, -1
        else:
            self._dt.update_incremental()
        marks = {p: self._dt.transaction_version(f"kappa/{self._table}/{p}") or 0 for p in range(PARTITIONS)}
        return marks, self._dt.version()


def check_answer(result, acked_before, lake_before):
    """Per partition, the answer's offsets are exactly 0..max, each once. Returns {p: max}
    (-1 for a partition with no rows), or raises with the partition and offsets at fault."""
    parts = result.column("_partition")
    offsets = result.column("_offset")
    assert parts.null_count == 0 and offsets.null_count == 0, "null _partition or _offset"
    unknown = set(pc.unique(parts).to_pylist()) - set(range(PARTITIONS))
    assert not unknown, f"rows of partitions that do not exist: {sorted(unknown)}"
    maxima = {}
    problems = []
    for p in range(PARTITIONS):
        mine = offsets.filter(pc.equal(parts, p))
        n = len(mine)
        if n == 0:
            maxima[p] = -1
        else:
            low, high = pc.min(mine).as_py(), pc.max(mine).as_py()
            distinct = pc.count_distinct(mine).as_py()
            maxima[p] = high
            if not (low == 0 and n == distinct == high + 1):
                counts = Counter(mine.to_pylist())
                dups = sorted(o for o, c in counts.items() if c > 1)
                missing = [o for o in range(0, high + 1) if o not in counts]
                problems.append(
                    f"partition {p}: {n} rows, {distinct} distinct, offsets {low}..{high}; "
                    f"duplicated {spans(dups)} ({len(dups)}); missing {spans(missing)} ({len(missing)})"
                )
        if acked_before[p] > maxima[p]:
            problems.append(f"partition {p}: offsets {maxima[p] + 1}..{acked_before[p]} were acked "
                            f"before the query started but are not in its answer (max {maxima[p]})")
        if lake_before[p] > maxima[p] + 1:
            problems.append(f"partition {p}: the lake held offsets below {lake_before[p]} before the "
                            f"query started, but its answer ends at {maxima[p]}")
    assert not problems, "\n".join(problems)
    return maxima


def spans(values, limit=10):
    """[1, 2, 3, 7] -> '1..3, 7' (at most `limit` spans)."""
    out = []
    for v in values:
        if out and out[-1][1] == v - 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    text = ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in out[:limit])
    return text + (", …" if len(out) > limit else "") if out else "none"


def kafka_ends(brokers, topic):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": unique("g"), "enable.auto.commit": False})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=DEADLINE_S)
                for p in range(PARTITIONS)}
    finally:
        consumer.close()


def test_answers_stay_exact_while_producing_and_tiering(brokers, tmp_path):
    topic = unique("union-cc")
    create_topic(brokers, topic, partitions=PARTITIONS)
    name = "cc_" + topic.split("-")[-1]
    config = tmp_path / "kappa.toml"
    config.write_text(
        f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\n'
        f'columns = "id BIGINT, amount DOUBLE"\n'
    )
    lake = tmp_path / "lake"
    lake_marks = LakeWatermarks(lake / "tables" / name, name)

    with contextlib.ExitStack() as stack:
        producer = BackgroundProducer(brokers, topic, RATE).start()
        stack.callback(producer.stop)
        # The gateway starts before the lake table exists: the first queries read Kafka alone.
        gateway = Gateway(brokers, config.read_text(), ["--lake", str(lake)])
        stack.callback(gateway.stop)
        time.sleep(0.5)
        compactor = Compactor(brokers, lake, config, tmp_path)
        stack.callback(compactor.stop)

        conn = stack.enter_context(flightsql.connect(gateway.uri, autocommit=True))
        cur = stack.enter_context(conn.cursor())

        sql = f"SELECT _partition, _offset FROM {name}"
        query_max = {p: -1 for p in range(PARTITIONS)}  # the highest offset any answer had
        both_tiers = 0  # answers with rows from the lake and from Kafka in some partition
        kafka_only = 0  # answers planned before the compactor's first watermarks
        watermarks_seen = set()
        versions_seen = set()
        ran = 0
        started = time.monotonic()
        # At least QUERIES queries, and on until the compactor has moved the watermarks a few
        # times (fast queries can finish 200 before it commits five times).
        while time.monotonic() - started < QUERY_PHASE_S and (
            ran < QUERIES or len([m for m in watermarks_seen if any(m)]) < MIN_WATERMARK_SETS
        ):
            acked_before = producer.acked_max()
            lake_before, version = lake_marks.read()
            try:
                cur.execute(sql)
                result = cur.fetch_arrow_table()
            except flightsql.Error as e:
                raise AssertionError(f"query {ran} failed (lake watermarks before it {lake_before}, "
                                     f"Delta version {version}): {e}\ncompactor {compactor.output()}") from e
            lake_after, version_after = lake_marks.read()
            try:
                maxima = check_answer(result, acked_before, lake_before)
            except AssertionError as e:
                raise AssertionError(
                    f"query {ran} ({result.num_rows} rows) is not the whole log of a snapshot:\n{e}\n"
                    f"acked before it (max per partition): {acked_before}\n"
                    f"lake watermarks before it: {lake_before} (version {version}), "
                    f"after it: {lake_after} (version {version_after})"
                ) from None
            for p in range(PARTITIONS):
                assert lake_before[p] <= lake_after[p], f"partition {p}: lake watermark went back"
                query_max[p] = max(query_max[p], maxima[p])
            # The query's own watermark w is between lake_before and lake_after: rows below w came
            # from the lake, rows from w to the answer's max from Kafka.
            if any(0 < lake_before[p] and lake_after[p] <= maxima[p] for p in range(PARTITIONS)):
                both_tiers += 1
            if not any(lake_after.values()):
                kafka_only += 1
            watermarks_seen.add(tuple(lake_after.values()))
            versions_seen.add(version_after)
            ran += 1
            compactor.assert_running()
        elapsed = time.monotonic() - started

        # system.partitions agrees with the Delta log.
        before, _ = lake_marks.read()
        cur.execute(f"SELECT partition, lake_watermark FROM system.partitions WHERE topic = '{topic}' ORDER BY 1")
        shown = {r["partition"]: r["lake_watermark"] for r in cur.fetch_arrow_table().to_pylist()}
        after, _ = lake_marks.read()
        for p in range(PARTITIONS):
            assert shown[p] is not None and before[p] <= shown[p] <= after[p], (
                f"partition {p}: system.partitions shows lake_watermark {shown[p]}, the Delta log "
                f"had {before[p]} before and {after[p]} after")

        producer.stop()  # flushes: every record is acked or failed
        compactor.assert_running()

    print(f"{ran} queries in {elapsed:.1f} s, {both_tiers} read both tiers, {kafka_only} Kafka alone; "
          f"{len(versions_seen)} Delta versions seen, {len(watermarks_seen)} distinct watermark sets; "
          f"{producer.sent} records produced; highest offsets answered {query_max}")

    assert not producer.errors, f"producer errors: {producer.errors[:5]}"
    assert ran >= MIN_QUERIES, f"only {ran} queries in {elapsed:.1f} s"
    # Everything any answer held had been acked (and the producer's log is itself 0..end).
    ends = kafka_ends(brokers, topic)
    for p in range(PARTITIONS):
        acked = producer.acked
        low, high = ends[p]
        assert low == 0 and sorted(acked[p]) == list(range(high)), (
            f"partition {p}: Kafka holds {low}..{high}, acked {len(acked[p])} offsets "
            f"(missing {spans([o for o in range(high) if o not in acked[p]])})")
        assert query_max[p] < high, f"partition {p}: an answer had offset {query_max[p]}, never acked"
        assert query_max[p] > 0, f"partition {p}: no answer had any of its rows"
    marks = [m for m in watermarks_seen if any(m)]
    assert len(marks) >= MIN_WATERMARK_SETS - 1, (
        f"the compactor moved the watermarks only {len(marks)} times: {sorted(marks)}")
    assert both_tiers >= 5, f"only {both_tiers} of {ran} answers read both the lake and Kafka"
