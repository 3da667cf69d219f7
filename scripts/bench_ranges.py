"""Range scans: point lookups, a 1% _timestamp range and the newest records by
offset, each against a full scan (or a 100x smaller topic) measured in the same
run on the same broker. Prints the ratios against their targets and, from
EXPLAIN ANALYZE, how many records each query fetched from Kafka.

Not part of the test run: scripts/bench_ranges.sh starts the broker."""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import adbc_driver_flightsql.dbapi as flightsql
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

PAD = "x" * 40  # values of about 70 bytes


def produce(brokers, topic, count, partitions, start_ms):
    """`count` JSON records round-robin over `partitions`, record i stamped
    start_ms + i (so timestamps rise by 1 ms per record across the topic)."""
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": "-1"})])[topic].result(30)
    producer = Producer({
        "bootstrap.servers": brokers, "linger.ms": 50, "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 1_048_576,
    })
    for i in range(count):
        value = json.dumps({"id": i, "v": PAD}).encode()
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions, timestamp=start_ms + i)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(300) == 0


def run(cur, sql):
    started = time.perf_counter()
    cur.execute(sql)
    table = cur.fetch_arrow_table()
    return table, time.perf_counter() - started


def scan_metrics(cur, sql):
    """From EXPLAIN ANALYZE of `sql`: the offsets the KafkaScanExec node planned
    to read (the sum of its ranges, exact), its records_fetched and output_rows
    metrics (as DataFusion prints them: 4 significant digits above 1,000), and
    the elapsed time."""
    table, elapsed = run(cur, f"EXPLAIN ANALYZE {sql}")
    plan = "\n".join(str(v) for v in table.column(table.num_columns - 1).to_pylist())
    line = next(l for l in plan.splitlines() if "KafkaScanExec" in l)
    ranges = re.search(r"ranges=\[([^\]]*)\]", line)
    spans = re.findall(r"p\d+:(\d+)\.\.(\d+)", ranges.group(1)) if ranges else []
    planned = sum(int(b) - int(a) for a, b in spans) if spans else None
    shown = {}
    for name in ("records_fetched", "output_rows"):
        match = re.search(rf"\b{name}=([0-9.]+(?: [KMB])?)", line)
        assert match, f"no {name} in: {line}"
        shown[name] = match.group(1)
    return planned, shown["records_fetched"], shown["output_rows"], elapsed


def ts_literal(ms):
    text = datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"TIMESTAMP '{text}Z'"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--gateway-bin", required=True)
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the big topic")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per short query (median)")
    parser.add_argument("--full-scans", type=int, default=1, help="timed full scans (the fastest counts)")
    parser.add_argument("--kafka-property", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to the gateway (repeatable)")
    args = parser.parse_args()

    n, p = args.records, args.partitions
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    small_n = n // 100
    stamp = int(time.time())
    big_topic, small_topic = f"bench-big-{stamp}", f"bench-small-{stamp}"
    now = int(time.time() * 1000)
    big_start = now - n - 60_000
    started = time.perf_counter()
    produce(args.brokers, big_topic, n, p, big_start)
    produce_s = time.perf_counter() - started
    produce(args.brokers, small_topic, small_n, p, now - small_n - 60_000)
    print(f"produced {n:,} records into {big_topic} ({p} partitions) in {produce_s:.1f} s "
          f"({n / produce_s:,.0f} records/s); {small_n:,} into {small_topic}")

    tables = "".join(
        f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\n'
        f'columns = "id BIGINT, v VARCHAR"\ntimestamp_skew = "1s"\n'
        for name, topic in (("big", big_topic), ("small", small_topic))
    )
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="kappa-bench-", delete=False)
    config.write(tables)
    config.close()
    gateway = subprocess.Popen(
        [args.gateway_bin, "serve", "--listen", "127.0.0.1:0", "--brokers", args.brokers,
         "--config", config.name, "--log-filter", "warn",
         *(a for kv in args.kafka_property for a in ("--kafka-property", kv))],
        stdout=subprocess.PIPE, text=True,
    )
    print("gateway: " + os.path.basename(args.gateway_bin)
          + "".join(f" --kafka-property {kv}" for kv in args.kafka_property)
          + "; tables big, small: JSON, timestamp_skew = 1s")
    try:
        address = gateway.stdout.readline().strip().removeprefix("listening on ")
        with flightsql.connect(f"grpc://{address}", autocommit=True) as conn, conn.cursor() as cur:
            bench(cur, args, n, p, small_n, big_start, big_topic)
    finally:
        gateway.terminate()
        try:
            gateway.wait(10)
        except subprocess.TimeoutExpired:
            gateway.kill()
        os.unlink(config.name)


def bench(cur, args, n, p, small_n, big_start, big_topic):
    rng = random.Random(1)
    rows = []  # (label, seconds, result rows, planned offsets, records_fetched, scan output_rows)

    def lookup(table, count):
        part = rng.randrange(p)
        offset = rng.randrange(count // p)
        return f"SELECT * FROM {table} WHERE _partition = {part} AND _offset = {offset}"

    def timed(make_sql, expect_rows, warmup=2):
        times = []
        for i in range(warmup + args.runs):
            table, elapsed = run(cur, make_sql())
            assert table.num_rows == expect_rows, (make_sql(), table.num_rows)
            if i >= warmup:
                times.append(elapsed)
        return statistics.median(times)

    # 1. Point lookups, big and small interleaved so drift hits both alike.
    times = {"big": [], "small": []}
    for i in range(2 + args.runs):
        for table, count in (("big", n), ("small", small_n)):
            result, elapsed = run(cur, lookup(table, count))
            assert result.num_rows == 1, result.num_rows
            if i >= 2:
                times[table].append(elapsed)
    point = {}
    for table, count in (("big", n), ("small", small_n)):
        point[table] = statistics.median(times[table])
        label = f"point lookup, {table} ({count:,} records)"
        rows.append((label, point[table], 1, *scan_metrics(cur, lookup(table, count))[:3]))

    # 2. A 1% _timestamp range in the middle of the big topic.
    lo = big_start + int(n * 0.495)
    hi = lo + n // 100
    where = f"_timestamp >= {ts_literal(lo)} AND _timestamp < {ts_literal(hi)}"
    sql = f"SELECT * FROM big WHERE {where}"
    print(f"range: {where}")
    ts_range = timed(lambda: sql, n // 100)
    rows.append(("1% _timestamp range", ts_range, n // 100, *scan_metrics(cur, sql)[:3]))

    # 3. The newest 100 records by offset.
    sql = "SELECT * FROM big ORDER BY _offset DESC LIMIT 100"
    last = timed(lambda: sql, 100)
    rows.append(("ORDER BY _offset DESC LIMIT 100", last, 100, *scan_metrics(cur, sql)[:3]))

    # 4. The full scan, timed --full-scans times, then once more under EXPLAIN
    # ANALYZE (which reads everything again); the fastest counts.
    full_times = []
    for _ in range(args.full_scans):
        table, elapsed = run(cur, "SELECT count(*) FROM big")
        assert table.column(0)[0].as_py() == n, table
        full_times.append(elapsed)
    *metrics, elapsed = scan_metrics(cur, "SELECT count(*) FROM big")
    full_times.append(elapsed)
    full = min(full_times)
    rows.append(("full scan, SELECT count(*)", full, 1, *metrics))

    # For comparison (one run, under EXPLAIN ANALYZE): the same range on the
    # undeclared topic. Its CreateTime timestamps promise no order, so only the
    # lower bound narrows the read.
    *metrics, elapsed = scan_metrics(cur, f'SELECT * FROM "{big_topic}" WHERE {where}')
    rows.append(("1% range, undeclared topic (no skew bound)", elapsed, n // 100, *metrics))

    print(f"\n{'query':44s} {'seconds':>8s} {'rows':>8s}"
          f" {'planned offsets':>16s} {'records_fetched':>16s} {'output_rows':>12s}")
    for label, seconds, count, planned, fetched, out in rows:
        planned = "?" if planned is None else format(planned, ",")
        print(f"{label:44s} {seconds:8.3f} {count:8,d} {planned:>16s} {fetched:>16s} {out:>12s}")
    print("planned offsets: the sum of the scan's ranges in the plan (exact); ORDER BY _offset DESC LIMIT n\n"
          "reads only the newest n of each partition's range. records_fetched, output_rows: the scan's metrics\n"
          "as DataFusion prints them (4 significant digits).")
    print(f"short queries: median of {args.runs} runs after 2 warm-ups; full scan: fastest of "
          + ", ".join(f"{t:.1f} s" for t in full_times) + " (the last under EXPLAIN ANALYZE);"
          " undeclared range: one EXPLAIN ANALYZE run")

    print(f"\n{'ratio':44s} {'measured':>8s}  target")
    for name, ratio, target in [
        (f"point lookup, {n:,} / {small_n:,} records", point["big"] / point["small"], 1.2),
        ("1% _timestamp range / full scan", ts_range / full, 0.03),
        ("last 100 by offset / full scan", last / full, 0.02),
    ]:
        print(f"{name:44s} {ratio:8.4f}  <= {target:<5} {'met' if ratio <= target else 'MISSED'}")
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    sys.exit(main())
