"""Tiering speed on librdkafka's mock cluster: `kappa-compactor run --once --tier-after 0s` against
`kcat -C -e -o beginning -q > /dev/null` reading the same topic in the same run, and the
compactor's peak RSS.

Produces N JSON records (bench_mock.py's records) over P partitions of the mock cluster, then
times kcat and the compactor, taking turns, each the best of R runs. Every compactor run tiers
every record into a fresh, empty lake folder; the run fails unless the Delta table holds exactly N
rows, each (_partition, _offset) once, and every partition's watermark is the partition's end.
Peak RSS is the kernel's high-water mark of the compactor process (`ru_maxrss` from wait4, in a
small process that starts it).
`--max-records-per-commit` (repeatable) measures other commit sizes; the compactor's default
comes first.

Not part of the test run: scripts/bench_compactor.sh builds the binaries and calls this."""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pyarrow.compute as pc
from confluent_kafka import Consumer, Producer, TopicPartition
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from bench_mock import MOCK_MAX_BYTES_PER_PARTITION, MOCK_MAX_RECORDS_PER_PARTITION, produce

COLUMNS = "id BIGINT, customer VARCHAR, amount DOUBLE, pad VARCHAR"
SUMMARY = re.compile(r"^(?P<table>\S+): (?P<records>\d+) records in (?P<commits>\d+) commits\b")


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores ({model})"


def end_offsets(brokers, topic, partitions):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "bench-compactor", "enable.auto.commit": False})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(partitions)}
    finally:
        consumer.close()


# Starts the command from a small process and reports its wait4 rusage. The kernel's ru_maxrss
# keeps the high-water mark of the memory a process had before exec, so a compactor forked from
# this script (hundreds of MiB after producing) would report this script's peak, not its own.
RUSAGE_HELPER = """
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{time.perf_counter() - started} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def kcat(brokers, topic, *extra):
    """bench_mock.py's baseline, with extra kcat arguments."""
    subprocess.run(["kcat", "-b", brokers, "-C", "-t", topic, "-e", "-o", "beginning", "-q", *extra],
                   stdout=subprocess.DEVNULL, check=True)


def run_compactor(cmd):
    """Runs `cmd` to its end; returns (stdout, seconds, peak RSS in MiB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r") as usage:
        code = subprocess.run([sys.executable, "-c", RUSAGE_HELPER, usage.name, *cmd], stdout=out,
                              stderr=err).returncode
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        measured = usage.read().split()
    if code != 0 or len(measured) != 2:
        sys.exit(f"kappa-compactor failed ({code}): {' '.join(cmd)}\n{stdout}{stderr}")
    return stdout, float(measured[0]), int(measured[1]) / 1024  # ru_maxrss is in KiB on Linux


def tier(args, brokers, config, table, max_per_commit, ends, wrap=()):
    """One compactor run into a fresh lake; checks that it tiered every record, returns its numbers."""
    lake = tempfile.mkdtemp(prefix="kappa-bench-compactor-")
    try:
        cmd = [*wrap, args.compactor_bin, "run", "--once", "--tier-after", "0s", "--brokers", brokers,
               "--config", config, "--lake", lake, "--table", table]
        if max_per_commit is not None:
            cmd += ["--max-records-per-commit", str(max_per_commit)]
        stdout, elapsed, rss = run_compactor(cmd)
        summary = next((m for m in map(SUMMARY.match, stdout.splitlines()) if m and m["table"] == table), None)
        if summary is None:
            sys.exit(f"no summary line for {table} in the compactor's output:\n{stdout}")
        try:
            dt = DeltaTable(os.path.join(lake, "tables", table))
        except TableNotFoundError:
            sys.exit(f"the compactor made no Delta table in {lake}; its output:\n{stdout}")
        adds = dt.get_add_actions(flatten=True)
        rows = dt.to_pyarrow_table(columns=["_partition", "_offset"])
        distinct = pc.count_distinct(pc.add(pc.multiply(pc.cast(rows["_partition"], "int64"), 1 << 40),
                                            rows["_offset"])).as_py()
        marks = {p: dt.transaction_version(f"kappa/{table}/{p}") for p in ends}
        if not distinct == rows.num_rows == int(summary["records"]) == args.records or marks != ends:
            sys.exit(f"the compactor did not tier every record once: {rows.num_rows} rows in the Delta table "
                     f"({distinct} distinct offsets), summary {summary.group(0)!r}, {args.records} produced; "
                     f"watermarks {marks}, Kafka ends {ends}")
        size = sum(adds.column("size_bytes").to_pylist())
        return {"seconds": elapsed, "rss": rss, "commits": int(summary["commits"]), "files": len(adds),
                "bytes": size}
    finally:
        shutil.rmtree(lake, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compactor-bin", required=True)
    parser.add_argument("--mock-bin", required=True)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--value-bytes", type=int, metavar="B",
                        help="values of about B bytes (a longer pad) instead of bench_mock.py's ~100")
    parser.add_argument("--max-records-per-commit", type=int, action="append", default=[None], metavar="N",
                        help="also measure this commit size (repeatable); the compactor's default is always run")
    parser.add_argument("--perf", metavar="FILE",
                        help="after the timed runs, one more run (default commit size) under `perf record -g -o FILE`")
    args = parser.parse_args()
    per_partition = -(-args.records // args.partitions)
    if per_partition > MOCK_MAX_RECORDS_PER_PARTITION:
        raise SystemExit(f"{per_partition} records per partition: the mock keeps at most "
                         f"{MOCK_MAX_RECORDS_PER_PARTITION}; use more partitions")
    if args.value_bytes and per_partition * args.value_bytes > MOCK_MAX_BYTES_PER_PARTITION:
        raise SystemExit("more than 5 MB per partition: the mock would drop records; use more partitions")

    topic = table = "bench"
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    mock = subprocess.Popen([args.mock_bin, topic, str(args.partitions)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    config = None
    try:
        brokers = mock.stdout.readline().strip()
        started = time.perf_counter()
        value_bytes = produce(brokers, topic, args.records, args.partitions, args.value_bytes or None)
        if value_bytes / args.partitions > MOCK_MAX_BYTES_PER_PARTITION:
            raise SystemExit("more than 5 MB per partition: the mock would drop records; use more partitions")
        ends = end_offsets(brokers, topic, args.partitions)
        if sum(ends.values()) != args.records:
            raise SystemExit(f"the mock holds {sum(ends.values())} records, not {args.records}: {ends}")
        print(f"produced {args.records:,} records ({value_bytes / 1e6:.0f} MB of JSON values) to {args.partitions} "
              f"partitions in {time.perf_counter() - started:.1f} s")
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(f'[[tables]]\nname = "{table}"\ntopic = "{topic}"\nformat = "json"\ncolumns = "{COLUMNS}"\n')
            config = f.name

        # kcat and the compactor take turns, so load from elsewhere hits both alike. kcat -e stops at
        # the end of every partition, which it learns from a fetch that comes back empty: with
        # librdkafka's default fetch.wait.max.ms (500) the mock holds that fetch for half a second.
        # The second kcat waits 10 ms, as kappa's scan consumer does.
        commit_sizes = list(dict.fromkeys(args.max_records_per_commit))  # None: the compactor's default
        kcats = {(): [], ("-X", "fetch.wait.max.ms=10"): []}
        runs = {commit: [] for commit in commit_sizes}
        for _ in range(args.runs):
            for extra, times in kcats.items():
                started = time.perf_counter()
                kcat(brokers, topic, *extra)
                times.append(time.perf_counter() - started)
            for commit in commit_sizes:
                runs[commit].append(tier(args, brokers, config, table, commit, ends))
        kcat_s, fast_s = (min(times) for times in kcats.values())
        base, fast = args.records / kcat_s, args.records / fast_s
        results = []
        for commit in commit_sizes:
            fastest = min(runs[commit], key=lambda r: r["seconds"])
            fastest["rss"] = max(r["rss"] for r in runs[commit])
            results.append((commit, fastest))

        print(f"\nmachine: {machine()}; best of {args.runs} runs")
        print(f"kcat -b MOCK -C -t {topic} -e -o beginning -q > /dev/null\n"
              f"{args.compactor_bin} run --once --tier-after 0s --table {table} --lake FRESH_FOLDER ...\n")
        print(f"{'reader':50s} {'records/s':>10s} {'vs kcat':>8s} {'seconds':>8s} {'peak RSS':>9s} "
              f"{'commits':>8s} {'files':>6s} {'lake MB':>8s}")
        print(f"{'kcat (baseline)':50s} {base:10.0f} {1:8.2f} {kcat_s:8.2f}")
        print(f"{'kcat -X fetch.wait.max.ms=10':50s} {fast:10.0f} {fast / base:8.2f} {fast_s:8.2f}")
        for max_per_commit, r in results:
            label = "kappa-compactor, " + ("default commit size" if max_per_commit is None
                                           else f"--max-records-per-commit {max_per_commit}")
            rate = args.records / r["seconds"]
            print(f"{label:50s} {rate:10.0f} {rate / base:8.2f} {r['seconds']:8.2f} {r['rss']:5.0f} MiB "
                  f"{r['commits']:8d} {r['files']:6d} {r['bytes'] / 1e6:8.1f}")
        print(f"\nEvery compactor run tiered all {args.records:,} records into a fresh lake (commits: those with "
              "data, after the empty one that creates the table). seconds: the fastest run; peak RSS: the largest.")
        default = results[0][1]
        rate = args.records / default["seconds"]
        print(f"compactor/kcat: {rate / base:.2f} (target >= 0.5); against kcat with a 10 ms fetch wait: "
              f"{rate / fast:.2f}; peak RSS {default['rss']:.0f} MiB (target < 1024 MiB)")
        if args.perf:
            r = tier(args, brokers, config, table, None, ends, wrap=("perf", "record", "-g", "-o", args.perf, "--"))
            print(f"perf run: {r['seconds']:.2f} s under perf; `perf report -i {args.perf}`")
        print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        if config:
            os.unlink(config)
        mock.stdin.close()
        mock.wait(10)


if __name__ == "__main__":
    main()
