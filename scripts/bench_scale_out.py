"""One gateway against three (scripts/bench_scale_out.sh starts the broker).

Produces `records` JSON records over `partitions` partitions, then starts a gateway on its own and
a cluster of three on this machine (two `--worker`s and a coordinator listing them), and times
through ADBC, alternating, the median of `runs` after one warm-up:

* a large query (a grouped count and sum over every record): split into tasks on the cluster;
* a small query (`count(*)` of 1,000 offsets): the size a dashboard asks for, below the
  threshold, so the cluster runs it on the coordinator alone, as one gateway does;
* the same small query with `--offsets-per-task 100` on a second coordinator: what distributing a
  query that small would cost;
* a full answer (every record, no order): on the cluster GetFlightInfo gives it as one endpoint per
  gateway, each a slice of the same snapshot, and ADBC fetches them in parallel;
* with `--tiered`, the full answer and the large query on a third coordinator with the default task
  sizes, where the lake's rows weigh a tenth of an offset each and stay on one gateway.

Prints each median, the ratio to one gateway, and how the large query's work spread: each task's
records and bytes fetched (EXPLAIN ANALYZE VERBOSE).

With `--tiered`, the topic is a JSON table the compactor tiers into a lake first (every gateway has
the lake), so the large query reads the lake tier: its spread is each task's lake files and rows. On a 2-core machine the cluster cannot be
faster (three gateways share two cores); the ratios say what distribution costs, not what it gains."""

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import tempfile
import time
import uuid

import adbc_driver_flightsql.dbapi as flightsql
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def produce(brokers, topic, records, partitions):
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 50, "batch.num.messages": 100_000,
                         "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 1_048_576})
    for i in range(records):
        value = json.dumps({"id": i, "amount": i % 97, "customer": f"c{i % 101}"}).encode()
        while True:
            try:
                producer.produce(topic, value=value, key=b"k%d" % (i % 101), partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


def tier(args, topic):
    """The topic as a table whose records the compactor tiers into a new lake: the flags that
    give a gateway the table and the lake."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    config = folder / "kappa.toml"
    config.write_text(f'[[tables]]\nname = "{topic}"\ntopic = "{topic}"\nformat = "json"\n'
                      f'columns = "id BIGINT, amount BIGINT, customer VARCHAR"\n')
    lake = folder / "lake"
    started = time.perf_counter()
    subprocess.run([args.compactor_bin, "run", "--once", "--brokers", args.brokers, "--lake", str(lake),
                    "--config", str(config), "--tier-after", "0s",
                    "--max-records-per-commit", str(max(1, args.records // 12))],
                   check=True, capture_output=True, timeout=1800)
    print(f"tiered into {lake} in {time.perf_counter() - started:.1f} s")
    return ["--config", str(config), "--lake", str(lake)]


def start(binary, brokers, *flags):
    process = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--brokers", brokers,
                                "--log-filter", "warn", *flags], stdout=subprocess.PIPE, text=True)
    address = process.stdout.readline().strip().removeprefix("listening on ")
    return process, address


def timed(address, sql, runs):
    times = []
    with flightsql.connect(f"grpc://{address}", autocommit=True) as conn, conn.cursor() as cur:
        for i in range(1 + runs):
            started = time.perf_counter()
            cur.execute(sql)
            cur.fetch_arrow_table()
            if i:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def rows_of(address, sql):
    with flightsql.connect(f"grpc://{address}", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().num_rows


def explain(address, sql):
    with flightsql.connect(f"grpc://{address}", autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("EXPLAIN ANALYZE VERBOSE " + sql)
        return "\n".join(cur.fetch_arrow_table().column("plan").to_pylist())


def endpoints(address, sql):
    """The Flight endpoints GetFlightInfo gives for `sql`, and where each is fetched."""
    import pyarrow.flight as fl
    command = sql.encode()
    # A Flight SQL CommandStatementQuery in a protobuf Any, encoded by hand (pyarrow.flight speaks
    # Flight, not Flight SQL).
    def field(number, payload):
        length, out = len(payload), bytearray([number << 3 | 2])
        while True:
            byte, length = length & 0x7F, length >> 7
            out.append(byte | (0x80 if length else 0))
            if not length:
                return bytes(out) + payload
    cmd = field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + field(2, field(1, command))
    client = fl.FlightClient(f"grpc://{address}")
    try:
        info = client.get_flight_info(fl.FlightDescriptor.for_command(cmd))
        return [[loc.uri.decode() for loc in e.locations][:1] or ["(its own connection)"] for e in info.endpoints]
    finally:
        client.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--gateway-bin", required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tiered", action="store_true", help="tier the records into a lake first")
    parser.add_argument("--compactor-bin")
    args = parser.parse_args()

    topic = f"scale-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.brokers})
    admin.create_topics([NewTopic(topic, args.partitions, 1, config={"retention.ms": "-1"})])[topic].result(30)
    started = time.perf_counter()
    produce(args.brokers, topic, args.records, args.partitions)
    print(f"produced {args.records:,} records in {args.partitions} partitions in {time.perf_counter() - started:.1f} s")

    table = tier(args, topic) if args.tiered else []
    processes = []
    try:
        alone, alone_at = start(args.gateway_bin, args.brokers, *table)
        workers = [start(args.gateway_bin, args.brokers, *table, "--worker") for _ in range(2)]
        urls = ",".join(f"http://{at}" for _, at in workers)
        per_task = str(max(1, args.records // 6))
        coordinator, at = start(args.gateway_bin, args.brokers, *table, "--workers", urls,
                                "--offsets-per-task", per_task, "--lake-rows-per-task", per_task)
        eager, eager_at = start(args.gateway_bin, args.brokers, *table, "--workers", urls,
                                "--offsets-per-task", "100", "--lake-rows-per-task", "100")
        processes = [alone, coordinator, eager, *(p for p, _ in workers)]
        if args.tiered:
            # The cluster as deployed: a lake row weighs a tenth of an offset (--lake-rows-per-task).
            default, default_at = start(args.gateway_bin, args.brokers, *table, "--workers", urls)
            processes.append(default)
        time.sleep(3)  # the coordinators' first health checks

        large = f'SELECT _key, count(*) AS n, sum(_offset) AS s, sum(length(_value)) AS b FROM "{topic}" GROUP BY _key'
        small = f'SELECT count(*) FROM "{topic}" WHERE _partition = 0 AND _offset < 1000'
        full = f'SELECT _partition, _offset, _key, _value FROM "{topic}"'
        rows = [
            ("full answer, one gateway", timed(alone_at, full, args.runs)),
            ("full answer, three gateways (one slice each, fetched in parallel)", timed(at, full, args.runs)),
            ("large query, one gateway", timed(alone_at, large, args.runs)),
            ("large query, three gateways", timed(at, large, args.runs)),
            ("small query, one gateway", timed(alone_at, small, args.runs)),
            ("small query, cluster (runs on the coordinator)", timed(at, small, args.runs)),
            ("small query, distributed anyway", timed(eager_at, small, args.runs)),
        ]
        if args.tiered:
            rows += [
                ("full answer, cluster with the default task sizes", timed(default_at, full, args.runs)),
                ("large query, cluster with the default task sizes", timed(default_at, large, args.runs)),
            ]
        base = {label.split()[0]: seconds for label, seconds in rows if label.endswith("one gateway")}
        print(f"\n| query | median | vs one gateway |\n|---|---:|---:|")
        for label, seconds in rows:
            ratio = seconds / base[label.split()[0]]
            print(f"| {label} | {seconds * 1000:.1f} ms | {ratio:.2f} |")

        print(f"\nendpoints of the full answer on the cluster: {endpoints(at, full)}")
        if args.tiered:
            print(f"endpoints of the full answer with the default task sizes: {endpoints(default_at, full)}")
        print(f"rows of the full answer: one gateway {rows_of(alone_at, full):,}, "
              f"three gateways {rows_of(at, full):,}")
        plan = explain(at, large)
        tasks = re.findall(r"t(\d+): KafkaScanExec: .*?records_fetched=\{\d+:([^}]+)\}.*?bytes_fetched=\{\d+:([^}]+)\}", plan)
        if not tasks:
            tasks = re.findall(r"t(\d+): KafkaScanExec: .*?bytes_fetched=\{\d+:([^}]+)\}.*?records_fetched=\{\d+:([^}]+)\}", plan)
            tasks = [(t, r, b) for t, b, r in tasks]
        remote = re.search(r"remote_coordinator_channels=(\d+)", plan)
        print(f"\nremote channels of the large query: {remote.group(1) if remote else '?'}")
        if tasks:
            print("the large query's Kafka scan, by task:")
        for task, records, bytes_ in tasks:
            print(f"  task {task}: {records} records, {bytes_} bytes fetched")
        # (VERBOSE shows the plan twice: once is enough.)
        shares = dict.fromkeys(re.findall(r"t(\d+): LakeFilesExec: table=\S+, version=\d+, files=(\d+), rows=(\d+)",
                                          plan))
        if shares:
            print("\nthe large query's lake tier, by task (its files, and their rows in the Delta log):")
            for task, files, rows_ in shares:
                print(f"  task {task}: {files} files, {int(rows_):,} rows")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
