"""latest() over a changelog against a full scan plus GROUP BY _key of the same table.

Produces `keys` x `updates` JSON records (each key's updates in order, keys spread over the
partitions by the producer's key hash) into one topic declared twice: `t`, a changelog table
(`changelog = "upsert"`), and `t_log`, the same topic as a plain table. `kappa-compactor run
--once` tiers both (and keeps `t`'s latest rows) before the last `--kafka-rounds` updates of each
key are produced, which stay in Kafka. Then times through ADBC, alternating:

* `SELECT * FROM latest('t')`: one row per key, from the latest rows the compactor keeps and the
  records above what they cover;
* `SELECT _key, name, score FROM latest('t')`: the same, only the columns the last-values baseline
  returns;
* `SELECT * FROM latest('t_log')`: the same answer from the whole history (no latest rows kept);
* two baselines, each a full scan of `t_log` and a GROUP BY _key: `last_value(name ORDER BY
  _offset)` and `last_value(score …)` (each key's latest values, as a user writes it without
  latest()), and `max(_offset)` (the cheapest such scan: no value is decoded).

Prints the median of each, each one's ratio to the baseline, and the rows read from each tier
(EXPLAIN ANALYZE: the lake tiers' output rows and the Kafka scan's records_fetched). The issue's
target is a ratio of at most 0.1 at 100 updates per key.

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


def tier_rows(cur, sql, explain=False):
    """Rows the lake tier and the Kafka scan read for `sql` (EXPLAIN ANALYZE)."""
    cur.execute(f"EXPLAIN ANALYZE {sql}")
    plan = "\n".join(str(v) for v in cur.fetch_arrow_table().column(1).to_pylist())
    if explain:
        print(f"\nEXPLAIN ANALYZE {sql}\n{plan}\n")
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
    parser.add_argument("--kafka-rounds", type=int, default=1,
                        help="updates of each key produced after the compactor ran (the tail in Kafka)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query, after one warm-up")
    parser.add_argument("--explain", action="store_true", help="print each query's EXPLAIN ANALYZE")
    args = parser.parse_args()

    n = args.keys * args.updates
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    stamp = int(time.time())
    topic, name = f"bench-latest-{stamp}", f"latest_{stamp}"
    create(args.brokers, topic, args.partitions)
    tiered_rounds = args.updates - args.kafka_rounds
    started = time.perf_counter()
    produce(args.brokers, topic, args.keys, range(tiered_rounds))

    lake = tempfile.mkdtemp(prefix="kappa-bench-latest-")
    config = os.path.join(lake, "kappa.toml")
    with open(config, "w") as f:
        # A changelog table (the compactor keeps its latest rows) and the same topic as a plain table.
        for table, changelog in ((name, 'changelog = "upsert"\n'), (f"{name}_log", "")):
            f.write(f'[[tables]]\nname = "{table}"\ntopic = "{topic}"\nformat = "json"\n'
                    f'columns = "{COLUMNS}"\n{changelog}')
    gateway = None
    try:
        # Tier all but the last `kafka_rounds` updates of each key: those are produced after, in Kafka only.
        tier = subprocess.run(
            [args.compactor_bin, "run", "--once", "--tier-after", "0s", "--brokers", args.brokers,
             "--lake", lake, "--config", config, "--log-filter", "warn"],
            capture_output=True, text=True)
        if tier.returncode != 0:
            sys.exit(f"kappa-compactor failed ({tier.returncode}):\n{tier.stderr}")
        print("tiered:\n  " + tier.stdout.strip().replace("\n", "\n  "))
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
    # Two baselines over the same records: what a user writes for each key's latest values without
    # latest() (every value decoded), and the cheapest full scan with a GROUP BY (no value read).
    baselines = ["scan + GROUP BY, last values", "scan + GROUP BY, max(_offset)"]
    queries = [
        ("latest(t), rows kept", f"SELECT * FROM latest('{name}')"),
        ("latest(t), key and values", f"SELECT _key, name, score FROM latest('{name}')"),
        ("latest(t_log), history", f"SELECT * FROM latest('{name}_log')"),
        (baselines[0], f"SELECT _key, last_value(name ORDER BY _offset) AS name, "
                       f"last_value(score ORDER BY _offset) AS score FROM \"{name}_log\" GROUP BY _key"),
        (baselines[1], f"SELECT _key, max(_offset) AS last FROM \"{name}_log\" GROUP BY _key"),
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
    assert set(counts.values()) == {args.keys}, counts
    print(f"\n{'query':30s} {'median ms':>10s} {'(best)':>8s} {'rows':>8s} {'lake rows read':>15s} {'kafka records':>14s}")
    for label, sql in queries:
        lake, kafka = tier_rows(cur, sql, args.explain)
        print(f"{label:30s} {statistics.median(times[label]) * 1e3:10.1f} {min(times[label]) * 1e3:8.1f} "
              f"{counts[label]:8,d} {lake:15,d} {kafka:14,d}")
    for label, _ in queries[:3]:
        for baseline in baselines:
            ratio = statistics.median(times[label]) / statistics.median(times[baseline])
            print(f"{label} / ({baseline}): {ratio:.3f} (median of {args.runs} runs after one warm-up; "
                  "target <= 0.1)")

if __name__ == "__main__":
    sys.exit(main())
