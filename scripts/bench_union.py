"""The lake tier read through kappa against DuckDB reading the same Delta table in-process, and
against a bare pyarrow.flight server streaming the same Parquet files (the transfer floor).

Produces N JSON records, tiers all of them into a Delta table with `kappa-compactor run --once
--tier-after 0s`, starts the gateway with `--lake` on it, and times three queries through ADBC
(Flight SQL, results fetched into Arrow) and through DuckDB: a full scan, a filtered aggregate,
and a one-partition offset range. kappa and DuckDB runs alternate, so drift hits both alike; the
row counts (and the aggregate's values) must agree.

The full scan is also read with pyarrow.flight's client, from kappa (the Flight SQL command, spelled
out) and from scripts/flight_floor.py, a bare pyarrow.flight server (its own process) that streams
the same columns of the same files: what a Flight answer over loopback costs here with no engine
behind it.

DuckDB reads the table with `delta_scan` when its delta extension loads (it is downloaded on
first use, which machines without internet access cannot do), else with `read_parquet` over the
files of the table's current version as the `deltalake` package lists them; either way each run
reads the Delta log again, as kappa does per query.

Not part of the test run: scripts/bench_union.sh starts the broker."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as pa_flight
import duckdb
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from deltalake import DeltaTable

PAD = "x" * 40
COLUMNS = "id BIGINT, customer VARCHAR, amount DOUBLE, v VARCHAR"


def produce(brokers, topic, count, partitions):
    """`count` keyed JSON records round-robin over `partitions`, stamped now."""
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": "-1"})])[topic].result(30)
    producer = Producer({
        "bootstrap.servers": brokers, "linger.ms": 50, "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 1_048_576,
    })
    for i in range(count):
        value = json.dumps({"id": i, "customer": f"c{i % 100}", "amount": (i * 7919) % 10_000 / 100, "v": PAD})
        while True:
            try:
                producer.produce(topic, key=f"k{i}".encode(), value=value.encode(), partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(300) == 0


def end_offsets(brokers, topic, partitions):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"bench-{topic}", "enable.auto.commit": False})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)}
    finally:
        consumer.close()


def flight_sql_command(sql):
    """A Flight SQL CommandStatementQuery for `sql`, packed in a protobuf Any, as bytes."""
    def field(number, payload):  # a length-delimited protobuf field
        out, n = bytearray([number << 3 | 2]), len(payload)
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out) + payload
    query = field(1, sql.encode())
    return field(1, b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery") + field(2, query)


class FlightFloor:
    """scripts/flight_floor.py in a process of its own, streaming `columns` of `files`."""

    def __init__(self, columns, files):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flight_floor.py")
        self.process = subprocess.Popen([sys.executable, script, ",".join(columns), *files],
                                        stdout=subprocess.PIPE, text=True)
        port = int(self.process.stdout.readline())
        self.client = pa_flight.FlightClient(f"grpc://127.0.0.1:{port}")

    def run(self, _sql):
        started = time.perf_counter()
        table = self.client.do_get(pa_flight.Ticket(b"all")).read_all()
        return table, time.perf_counter() - started

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


class DuckLake:
    """DuckDB over the Delta table at `path`: delta_scan if the extension loads, else
    read_parquet over the current version's files (listed by `deltalake` on each run)."""

    def __init__(self, path, columns):
        self.path = path
        self.columns = ", ".join(f'"{c}"' for c in columns)
        self.con = duckdb.connect()
        self.listing = []  # seconds spent listing files, per read_parquet run
        self.how = "read_parquet over DeltaTable(...).file_uris()"
        for attempt in ("LOAD delta", "INSTALL delta"):
            try:
                if attempt == "INSTALL delta":
                    self.con.execute("INSTALL delta")
                self.con.execute("LOAD delta")
                self.how = "delta_scan (DuckDB's delta extension)"
                break
            except duckdb.Error as e:
                reason = str(e).splitlines()[0]
        else:
            print(f"DuckDB's delta extension is not available ({reason}); using read_parquet")

    def source(self):
        if self.how.startswith("delta_scan"):
            return f"(SELECT {self.columns} FROM delta_scan('{self.path}'))"
        started = time.perf_counter()
        files = DeltaTable(self.path).file_uris()
        self.listing.append(time.perf_counter() - started)
        return f"(SELECT {self.columns} FROM read_parquet({files!r}))"

    def run(self, sql):
        started = time.perf_counter()
        table = self.con.sql(sql.replace("{t}", self.source())).to_arrow_table()
        return table, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--gateway-bin", required=True)
    parser.add_argument("--compactor-bin", required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query and engine, after one warm-up")
    parser.add_argument("--lake", help="lake folder (default: a temporary one, removed at the end)")
    args = parser.parse_args()

    n, parts = args.records, args.partitions
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    stamp = int(time.time())
    topic, name = f"bench-union-{stamp}", f"union_{stamp}"
    started = time.perf_counter()
    produce(args.brokers, topic, n, parts)
    print(f"produced {n:,} records into {topic} ({parts} partitions) in {time.perf_counter() - started:.1f} s")

    lake = args.lake or tempfile.mkdtemp(prefix="kappa-bench-lake-")
    config = os.path.join(lake, "kappa.toml")
    os.makedirs(lake, exist_ok=True)
    with open(config, "w") as f:
        f.write(f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\ncolumns = "{COLUMNS}"\n')
    gateway = None
    try:
        started = time.perf_counter()
        tier = subprocess.run(
            [args.compactor_bin, "run", "--once", "--tier-after", "0s", "--brokers", args.brokers,
             "--lake", lake, "--config", config, "--log-filter", "warn"],
            capture_output=True, text=True)
        tier_s = time.perf_counter() - started
        if tier.returncode != 0:
            sys.exit(f"kappa-compactor failed ({tier.returncode}):\n{tier.stderr}")
        path = os.path.join(lake, "tables", name)
        dt = DeltaTable(path)
        ends = end_offsets(args.brokers, topic, parts)
        marks = {p: dt.transaction_version(f"kappa/{name}/{p}") for p in range(parts)}
        assert marks == ends, f"not everything was tiered: watermarks {marks}, Kafka ends {ends}"
        files = dt.file_uris()
        size = sum(os.path.getsize(u.removeprefix("file://")) for u in files)
        print(f"tiered in {tier_s:.1f} s ({n / tier_s:,.0f} records/s): Delta version {dt.version()}, "
              f"{len(files)} files, {size / 1e6:.1f} MB; {tier.stdout.strip()}")

        gateway = subprocess.Popen(
            [args.gateway_bin, "serve", "--listen", "127.0.0.1:0", "--brokers", args.brokers,
             "--config", config, "--lake", lake, "--log-filter", "warn"],
            stdout=subprocess.PIPE, text=True)
        address = gateway.stdout.readline().strip().removeprefix("listening on ")
        with flightsql.connect(f"grpc://{address}", autocommit=True) as conn, conn.cursor() as cur:
            bench(cur, args, name, path, ends, address)
    finally:
        if gateway is not None:
            gateway.terminate()
            try:
                gateway.wait(10)
            except subprocess.TimeoutExpired:
                gateway.kill()
        if not args.lake:
            shutil.rmtree(lake, ignore_errors=True)
    print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


def bench(cur, args, name, path, ends, address):
    def kappa(sql):
        started = time.perf_counter()
        cur.execute(sql.replace("{t}", name))
        table = cur.fetch_arrow_table()
        return table, time.perf_counter() - started

    flight_client = pa_flight.FlightClient(f"grpc://{address}")

    def kappa_flight(sql):
        """kappa read with pyarrow.flight's client, as the floor is."""
        started = time.perf_counter()
        command = pa_flight.FlightDescriptor.for_command(flight_sql_command(sql.replace("{t}", name)))
        info = flight_client.get_flight_info(command)
        table = flight_client.do_get(info.endpoints[0].ticket).read_all()
        return table, time.perf_counter() - started

    cur.execute(f"SELECT * FROM {name} LIMIT 0")
    columns = cur.fetch_arrow_table().schema.names
    duck = DuckLake(path, columns)
    print(f"DuckDB reads the table with {duck.how}; kappa through ADBC (Flight SQL) on {args.gateway_bin}")

    p0 = ends[0]
    lo = p0 // 2
    hi = lo + max(1, args.records // 100) - 1
    queries = [
        ("full scan, SELECT *", "SELECT * FROM {t}", args.records),
        ("filtered aggregate",
         "SELECT _partition, count(*) AS n, sum(amount) AS total FROM {t} WHERE amount > 50 "
         "GROUP BY 1 ORDER BY 1", len(ends)),
        (f"p0 offsets {lo}..{hi}", f"SELECT * FROM {{t}} WHERE _partition = 0 AND _offset BETWEEN {lo} AND {hi}",
         min(hi, p0 - 1) - lo + 1),
    ]
    floor = FlightFloor(columns, DeltaTable(path).file_uris())
    try:
        rows = measure(args, queries, kappa, kappa_flight, duck, floor)
    finally:
        floor.stop()
    report(args, rows, duck)


def measure(args, queries, kappa, kappa_flight, duck, floor):
    """Per query: (label, {engine: [seconds]}, rows). The full scan runs on all four readers."""
    rows = []
    for label, sql, expected in queries:
        engines = [("kappa", kappa), ("duckdb", duck.run)]
        if label.startswith("full scan"):
            engines += [("kappa, pyarrow.flight", kappa_flight), ("pyarrow.flight floor", floor.run)]
        times = {engine: [] for engine, _ in engines}
        results = {}
        for i in range(1 + args.runs):
            for engine, run in engines:
                table, elapsed = run(sql)
                if i > 0:
                    times[engine].append(elapsed)
                results[engine] = table
        for engine in ("kappa, pyarrow.flight", "pyarrow.flight floor"):
            if engine in results:
                assert results[engine].num_rows == expected, (engine, results[engine].num_rows, expected)
                assert results[engine].schema.names == results["kappa"].schema.names, engine
        k, d = results["kappa"], results["duckdb"]
        assert k.num_rows == d.num_rows == expected, (label, k.num_rows, d.num_rows, expected)
        assert k.schema.names == d.schema.names, (label, k.schema.names, d.schema.names)
        if label == "filtered aggregate":
            kp, dp = k.to_pylist(), d.to_pylist()
            assert [(r["_partition"], r["n"]) for r in kp] == [(r["_partition"], r["n"]) for r in dp], (kp, dp)
            assert all(abs(a["total"] - b["total"]) <= 1e-6 * abs(b["total"]) for a, b in zip(kp, dp)), (kp, dp)
        elif label.startswith("p0"):
            assert sorted(k.column("_offset").to_pylist()) == sorted(d.column("_offset").to_pylist())
        rows.append((label, times, k.num_rows))
    return rows


def report(args, rows, duck):
    print(f"\n{'query':28s} {'kappa ms':>9s} {'(best)':>8s} {'duckdb ms':>10s} {'(best)':>8s} "
          f"{'kappa/duckdb':>13s} {'rows':>10s}")
    for label, times, count in rows:
        km, kb = statistics.median(times["kappa"]) * 1e3, min(times["kappa"]) * 1e3
        dm, db = statistics.median(times["duckdb"]) * 1e3, min(times["duckdb"]) * 1e3
        print(f"{label:28s} {km:9.1f} {kb:8.1f} {dm:10.1f} {db:8.1f} {km / dm:13.2f} {count:10,d}")
    print(f"ms: median of {args.runs} runs after one warm-up (best in parentheses); ratio of the medians. "
          "Both fetch the whole result into Arrow; kappa's includes Flight SQL over loopback.")
    for label, times, count in rows:
        if "pyarrow.flight floor" not in times:
            continue
        floor_ms = statistics.median(times["pyarrow.flight floor"]) * 1e3
        print(f"\n{label}: the bare pyarrow.flight server streaming the same files {floor_ms:.1f} ms "
              f"(best {min(times['pyarrow.flight floor']) * 1e3:.1f}); kappa/floor "
              f"{statistics.median(times['kappa']) * 1e3 / floor_ms:.2f} through ADBC, "
              f"{statistics.median(times['kappa, pyarrow.flight']) * 1e3 / floor_ms:.2f} through pyarrow.flight "
              f"({statistics.median(times['kappa, pyarrow.flight']) * 1e3:.1f} ms)")
    if duck.listing:
        print(f"DuckDB's times include listing the files with deltalake: median "
              f"{statistics.median(duck.listing) * 1e3:.1f} ms per run.")


if __name__ == "__main__":
    sys.exit(main())
