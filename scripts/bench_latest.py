"""latest() over a changelog against a full scan plus GROUP BY _key of the same table.

Produces `keys` x `updates` JSON records (each key's updates in order, keys spread over the
partitions by the producer's key hash), tiers the first 90% of each partition into Delta Lake with
`kappa-compactor run --once` (before the last tenth is produced), leaves the rest in Kafka, then times through ADBC, alternating:

* `SELECT * FROM latest(t)`: one row per key, its newest record;
* the baseline, `SELECT _key, max(_offset) FROM t GROUP BY _key`: a full scan and a GROUP BY.

Prints the median of each, their ratio, and the rows read from each tier (EXPLAIN ANALYZE: the
lake tier's output rows and the Kafka scan's records_fetched). The issue's target is a ratio of
at most 0.1 at 100 updates per key; today latest() reads the whole history, so the ratio shows
what a compacted latest-per-key table has to win.

Not part of the test run: scripts/bench_latest.sh starts the broker."""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import adbc_driver_flightsql.dbapi as flightsql
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

COLUMNS = "name VARCHAR, score BIGINT"


def create(brokers, topic, partitions):
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": "-1"})])[topic].result(30)


def produce(brokers, topic, keys, rounds):
    """Round after round, every key's next value."""
    producer = Producer({
        "bootstrap.servers": brokers, "linger.ms": 50, "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 1_048_576,
    })
    for round_ in rounds:
        for k in range(keys):
            value = json.dumps({"name": f"user-{k}", "score": round_ * keys + k})
            while True:
                try:
                    producer.produce(topic, key=f"user-{k}".encode(), value=value.encode())
                    break
                except BufferError:
                    producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(300) == 0


def count(text, name):
    """A metric as EXPLAIN ANALYZE prints it (`output_rows=180.00 K`), as a number; 0 if absent."""
    found = re.search(name + r"=(\d+(?:\.\d+)?)\s?([KMB])?", text)
    if not found:
        return None
    return round(float(found.group(1)) * {None: 1, "K": 1e3, "M": 1e6, "B": 1e9}[found.group(2)])


def tier_rows(cur, sql):
    """Rows the lake tier and the Kafka scan read for `sql` (EXPLAIN ANALYZE)."""
    cur.execute(f"EXPLAIN ANALYZE {sql}")
    plan = "\n".join(str(v) for v in cur.fetch_arrow_table().column(1).to_pylist())
    lake, kafka = 0, 0
    lines = plan.splitlines()
    for i, line in enumerate(lines):
        if "LakeTierExec" in line:
            for below in lines[i + 1:]:
                rows = count(below, "output_rows")
                if rows is not None:
                    lake += rows
                    break
        if "KafkaScanExec" in line:
            kafka += count(line, "records_fetched") or 0
    return lake, kafka


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--gateway-bin", required=True)
    parser.add_argument("--compactor-bin", required=True)
    parser.add_argument("--keys", type=int, default=2_000)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query, after one warm-up")
    args = parser.parse_args()

    n = args.keys * args.updates
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    stamp = int(time.time())
    topic, name = f"bench-latest-{stamp}", f"latest_{stamp}"
    create(args.brokers, topic, args.partitions)
    tiered_rounds = args.updates * 9 // 10
    started = time.perf_counter()
    produce(args.brokers, topic, args.keys, range(tiered_rounds))

    lake = tempfile.mkdtemp(prefix="kappa-bench-latest-")
    config = os.path.join(lake, "kappa.toml")
    with open(config, "w") as f:
        # A plain table: latest('t') reads its latest rows, the baseline its history.
        f.write(f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\ncolumns = "{COLUMNS}"\n')
    gateway = None
    try:
        # Tier 90% of the history: the last tenth is produced after, in Kafka only.
        tier = subprocess.run(
            [args.compactor_bin, "run", "--once", "--tier-after", "0s", "--brokers", args.brokers,
             "--lake", lake, "--config", config, "--log-filter", "warn"],
            capture_output=True, text=True)
        if tier.returncode != 0:
            sys.exit(f"kappa-compactor failed ({tier.returncode}):\n{tier.stderr}")
        print(f"tiered: {tier.stdout.strip()}")
        produce(args.brokers, topic, args.keys, range(tiered_rounds, args.updates))
        print(f"produced {n:,} records ({args.keys:,} keys x {args.updates} updates, "
              f"{tiered_rounds} rounds tiered) into {topic} in {time.perf_counter() - started:.1f} s")
        gateway = subprocess.Popen(
            [args.gateway_bin, "serve", "--listen", "127.0.0.1:0", "--brokers", args.brokers,
             "--config", config, "--lake", lake, "--log-filter", "warn"],
            stdout=subprocess.PIPE, text=True)
        address = gateway.stdout.readline().strip().removeprefix("listening on ")
        with flightsql.connect(f"grpc://{address}", autocommit=True) as conn, conn.cursor() as cur:
            bench(cur, args, name)
    finally:
        if gateway is not None:
            gateway.terminate()
            try:
                gateway.wait(10)
            except subprocess.TimeoutExpired:
                gateway.kill()
        shutil.rmtree(lake, ignore_errors=True)
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def bench(cur, args, name):
    queries = [
        ("latest(t)", f"SELECT * FROM latest('{name}')"),
        ("scan + GROUP BY _key", f"SELECT _key, max(_offset) AS last FROM \"{name}\" GROUP BY _key"),
    ]
    times = {label: [] for label, _ in queries}
    counts = {}
    for i in range(1 + args.runs):
        for label, sql in queries:
            started = time.perf_counter()
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            if i > 0:
                times[label].append(time.perf_counter() - started)
            counts[label] = table.num_rows
    assert counts["latest(t)"] == counts["scan + GROUP BY _key"] == args.keys, counts
    print(f"\n{'query':24s} {'median ms':>10s} {'(best)':>8s} {'rows':>8s} {'lake rows read':>15s} {'kafka records':>14s}")
    for label, sql in queries:
        lake, kafka = tier_rows(cur, sql)
        print(f"{label:24s} {statistics.median(times[label]) * 1e3:10.1f} {min(times[label]) * 1e3:8.1f} "
              f"{counts[label]:8,d} {lake:15,d} {kafka:14,d}")
    ratio = statistics.median(times["latest(t)"]) / statistics.median(times["scan + GROUP BY _key"])
    print(f"latest / (scan + GROUP BY): {ratio:.2f} (median of {args.runs} runs after one warm-up; target <= 0.1)")


if __name__ == "__main__":
    sys.exit(main())
