"""Streaming queries (`tail`), measured on one broker in one run:

1. Latency: a stream `SELECT _timestamp, id FROM tail('lat') LIMIT R*S` is open while a producer
   writes R records/s for S seconds, each stamped (CreateTime) with the wall clock when it is
   produced; a record's latency is the time this client received its batch minus that stamp
   (same machine, same clock; Kafka timestamps have millisecond resolution). Prints p50/p99/max.
   The baseline, in the same run over the same records: a plain confluent-kafka consumer
   (`fetch.wait.max.ms=10`, as kappa's scans use) assigned to the topic's ends, its latency measured
   the same way; the ratios of kappa's p50 and p99 to the consumer's are printed.
2. Throughput: N records pre-produced, then read from the beginning by a plain confluent-kafka
   consumer and by `SELECT * FROM tail('thr', 'earliest') LIMIT N` through ADBC (JSON table,
   decoded) and the same over the raw topic; prints records/s and kappa's ratio to the consumer.
3. Memory: M records of --slow-value-bytes each (500,000 of 1 KB by default: far more than any
   buffer) are pre-produced, and a fresh gateway serves `tail('mem', 'earliest') LIMIT M` to a
   client that reads at most --slow-rate rows/s (it sleeps after each batch), so it falls ever
   further behind the broker; the gateway's VmRSS is sampled while it runs and its VmHWM (peak
   RSS) read at the end. Bounded means flat, far below the size of the backlog.

With --mock-bin, the broker is librdkafka's mock cluster (started here, its topics created at start:
it takes no CreateTopics request) instead of the test broker, whose own delivery latency (a plain
consumer's p99 of one to two seconds here) hides kappa's share. The mock keeps at most 100,000
records or 5 MB per partition, so the memory part, which needs a backlog far larger, is left out.

Not part of the test run: scripts/bench_tail.sh starts the broker (or, with --mock, the mock cluster)."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PAD = "x" * 40  # values of about 60 bytes
MOCK_TOPICS_EXIST = False  # set with --mock-bin: the mock cluster created every topic at start
MOCK_MAX_RECORDS_PER_PARTITION = 100_000
COLUMNS = "id BIGINT, v VARCHAR"


def create_topic(brokers, topic, partitions):
    if MOCK_TOPICS_EXIST:
        return
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": "-1"})])[topic].result(30)


def produce_bulk(brokers, topic, count, partitions, pad=PAD):
    producer = Producer({
        "bootstrap.servers": brokers, "linger.ms": 50, "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 1_048_576,
    })
    now = int(time.time() * 1000)
    for i in range(count):
        value = json.dumps({"id": i, "v": pad}).encode()
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions, timestamp=now)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(300) == 0


class Gateway:
    def __init__(self, binary, brokers, config, *args):
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--brokers", brokers, "--config", config,
             "--log-filter", "warn", *args],
            stdout=subprocess.PIPE, text=True,
        )
        line = self.process.stdout.readline().strip()
        assert line.startswith("listening on "), f"kappa-gateway said {line!r}"
        self.uri = "grpc://" + line.removeprefix("listening on ")

    def memory(self):
        """(VmRSS, VmHWM) of the gateway process, in MiB."""
        fields = {}
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024  # kB
        return fields["VmRSS"], fields["VmHWM"]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_for_stream(uri, timeout=30):
    with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cur.execute("SELECT count(*) AS n FROM system.streams")
            if cur.fetch_arrow_table().column("n")[0].as_py() > 0:
                return
            time.sleep(0.05)
    raise RuntimeError("the stream did not appear in system.streams")


def read_stream(cur, sql, timeout, on_batch=None):
    """Runs `sql` and reads its stream to the end (its LIMIT). Returns (rows, seconds from execute
    to the last batch). A timer cancels the statement after `timeout` seconds (then it raises)."""
    timer = threading.Timer(timeout, cur.adbc_cancel)
    timer.daemon = True
    timer.start()
    try:
        started = time.perf_counter()
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            rows += batch.num_rows
            if on_batch:
                on_batch(batch)
        return rows, time.perf_counter() - started
    finally:
        timer.cancel()


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def bench_latency(args, config):
    topic = args.lat_topic
    create_topic(args.brokers, topic, args.partitions)
    total = int(args.rate * args.seconds)
    gateway = Gateway(args.gateway_bin, args.brokers, config)
    latencies, batches, errors = [], [], []
    try:
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:

            def producer_thread():
                try:
                    wait_for_stream(gateway.uri)
                    producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5})
                    started = time.time()
                    for i in range(total):
                        delay = started + i / args.rate - time.time()
                        if delay > 0:
                            time.sleep(delay)
                        producer.produce(topic, value=json.dumps({"id": i, "v": PAD}).encode(),
                                         partition=i % args.partitions, timestamp=int(time.time() * 1000))
                        producer.poll(0)
                    assert producer.flush(30) == 0
                except Exception as e:
                    errors.append(e)

            def on_batch(batch):
                received = time.time() * 1_000_000
                stamps = batch.column(0).cast(pa.int64()).to_pylist()  # microseconds
                latencies.extend((received - us) / 1000 for us in stamps)
                batches.append(batch.num_rows)

            baseline = []
            consumer = threading.Thread(target=consumer_latency,
                                        args=(args.brokers, topic, args.partitions, total, baseline, errors),
                                        daemon=True)
            consumer.start()
            thread = threading.Thread(target=producer_thread, daemon=True)
            thread.start()
            rows, _ = read_stream(cur, f"SELECT _timestamp, id FROM tail('lat') LIMIT {total}",
                                  args.seconds + 120, on_batch)
            thread.join(60)
            consumer.join(60)
        assert not errors, errors
        assert rows == total, f"{rows} of {total} records arrived"
        assert len(baseline) == total, f"the consumer received {len(baseline)} of {total}"
    finally:
        gateway.stop()
    print(f"\nlatency, produce -> client: {total:,} records at {args.rate:,.0f}/s for {args.seconds:g} s, "
          f"{args.partitions} partitions, gateway --stream-linger default")
    for who, values in (("kappa, ADBC", latencies), ("plain consumer", baseline)):
        print(f"  {who:15s} p50 {pct(values, 50):7.1f} ms   p99 {pct(values, 99):7.1f} ms   "
              f"max {max(values):7.1f} ms   mean {statistics.fmean(values):6.1f} ms")
    print(f"  kappa/consumer: p50 {pct(latencies, 50) / pct(baseline, 50):.2f}, "
          f"p99 {pct(latencies, 99) / pct(baseline, 99):.2f}")
    print(f"  kappa: {len(batches):,} batches, {statistics.fmean(batches):.1f} rows per batch on average")
    return pct(latencies, 50), pct(latencies, 99)


def consumer_latency(brokers, topic, partitions, count, out, errors):
    """The baseline: a plain consumer from the topic's ends, each record's receipt time minus its stamp."""
    try:
        consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"bench-lat-{time.time()}",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + 600
        while len(out) < count and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.1):
                if message.error():
                    continue
                received = time.time() * 1000
                out.append(received - message.timestamp()[1])
        consumer.close()
    except Exception as e:
        errors.append(e)


def raw_consumer(brokers, topic, partitions, count):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"bench-{topic}-{time.time()}",
                         "enable.auto.commit": False})
    started = time.perf_counter()
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    rows, deadline = 0, time.monotonic() + 600
    while rows < count and time.monotonic() < deadline:
        for message in consumer.consume(10_000, 1.0):
            if not message.error():
                rows += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    assert rows == count, f"the consumer read {rows} of {count}"
    return elapsed


def bench_throughput(args, config):
    n, topic = args.records, args.thr_topic
    create_topic(args.brokers, topic, args.partitions)
    started = time.perf_counter()
    produce_bulk(args.brokers, topic, n, args.partitions)
    produce_s = time.perf_counter() - started
    print(f"\nthroughput: produced {n:,} records into {topic} ({args.partitions} partitions) in {produce_s:.1f} s "
          f"({n / produce_s:,.0f} records/s)")
    gateway = Gateway(args.gateway_bin, args.brokers, config)
    results = []
    try:
        idle = gateway.memory()[0]
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            for run in range(args.runs):
                base = raw_consumer(args.brokers, topic, args.partitions, n)
                results.append(("confluent-kafka consumer, from the beginning", base, base))
                for label, sql in [
                    ("kappa tail('thr', 'earliest'), JSON table, SELECT *",
                     f"SELECT * FROM tail('thr', 'earliest') LIMIT {n}"),
                    ("kappa tail of the raw topic, SELECT *",
                     f"SELECT * FROM tail('{topic}', 'earliest') LIMIT {n}"),
                ]:
                    rows, elapsed = read_stream(cur, sql, 900)
                    assert rows == n, f"{label}: {rows} of {n} rows"
                    results.append((label, elapsed, base))
        fast_peak = gateway.memory()[1]
    finally:
        gateway.stop()
    print(f"{'reader':56s} {'seconds':>8s} {'records/s':>10s} {'vs consumer':>12s}")
    for label, elapsed, base in results:
        print(f"{label:56s} {elapsed:8.2f} {n / elapsed:10,.0f} {base / elapsed:11.2f}x")
    print(f"(the ratio is the consumer's time over kappa's, each against the consumer run just before it; "
          f"{args.runs} run(s))")
    return idle, fast_peak


def bench_slow_client(args, config, idle, fast_peak):
    m, topic = args.slow_records, args.mem_topic
    create_topic(args.brokers, topic, args.partitions)
    started = time.perf_counter()
    produce_bulk(args.brokers, topic, m, args.partitions, pad="x" * args.slow_value_bytes)
    data_mib = m * (args.slow_value_bytes + 20) / 2**20
    print(f"\nmemory: produced {m:,} records of about {args.slow_value_bytes + 20:,} bytes ({data_mib:,.0f} MiB) "
          f"into {topic} in {time.perf_counter() - started:.1f} s")
    gateway = Gateway(args.gateway_bin, args.brokers, config)
    samples, done = [], threading.Event()

    def sampler():
        while not done.is_set():
            try:
                samples.append((time.monotonic(), *gateway.memory()))
            except OSError:
                return
            time.sleep(0.25)

    thread = threading.Thread(target=sampler, daemon=True)
    progress = []
    try:
        start_rss = gateway.memory()[0]
        thread.start()
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            read = [0]

            def on_batch(batch):
                read[0] += batch.num_rows
                progress.append((read[0], gateway.memory()[0]))
                time.sleep(batch.num_rows / args.slow_rate)

            rows, elapsed = read_stream(cur, f"SELECT * FROM tail('mem', 'earliest') LIMIT {m}",
                                        m / args.slow_rate * 3 + 300, on_batch)
            assert rows == m, f"{rows} of {m} rows"
        done.set()
        thread.join(5)
        _, peak = gateway.memory()
    finally:
        done.set()
        gateway.stop()
    print(f"  a slow client read them in {elapsed:.1f} s ({m / elapsed:,.0f} rows/s; it sleeps "
          f"{1 / args.slow_rate * 1e6:.0f} us per row after each batch)")
    marks = []
    for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
        row = next((p for p in progress if p[0] >= fraction * m), progress[-1])
        marks.append(f"{row[0]:,} rows: {row[1]:.0f} MiB")
    print("  gateway VmRSS as the client read: " + "; ".join(marks))
    print(f"  gateway peak RSS (VmHWM) {peak:.0f} MiB (sampled max VmRSS {max(s[1] for s in samples):.0f} MiB); "
          f"at start {start_rss:.0f} MiB; the records are {data_mib:,.0f} MiB")
    print(f"  (the gateway of the throughput runs, {args.records:,} small records read fast: "
          f"idle {idle:.0f} MiB, peak {fast_peak:.0f} MiB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", help="the broker (required unless --mock-bin)")
    parser.add_argument("--mock-bin", help="run on librdkafka's mock cluster, this binary (leaves out memory)")
    parser.add_argument("--gateway-bin", required=True)
    parser.add_argument("--seconds", type=float, default=30, help="latency run length")
    parser.add_argument("--rate", type=float, default=1000, help="latency run: records produced per second")
    parser.add_argument("--records", type=int, default=500_000, help="throughput run: records pre-produced")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1, help="throughput runs (consumer, then kappa)")
    parser.add_argument("--slow-rate", type=float, default=10_000, help="slow client: rows per second at most")
    parser.add_argument("--slow-records", type=int, default=500_000, help="slow client: records produced and read")
    parser.add_argument("--slow-value-bytes", type=int, default=1000, help="slow client: padding per record")
    parser.add_argument("--skip", action="append", default=[], choices=["latency", "memory"],
                        help="leave out a part (the throughput part always runs: it produces the data)")
    args = parser.parse_args()

    stamp = int(time.time())
    args.lat_topic, args.thr_topic, args.mem_topic = (f"bench_tail_{t}_{stamp}" for t in ("lat", "thr", "mem"))
    mock = None
    if args.mock_bin:
        global MOCK_TOPICS_EXIST
        if -(-max(args.records, int(args.rate * args.seconds)) // args.partitions) > MOCK_MAX_RECORDS_PER_PARTITION:
            parser.error(f"the mock keeps at most {MOCK_MAX_RECORDS_PER_PARTITION} records a partition: "
                         "fewer --records, a lower --rate or --seconds, or more --partitions")
        mock = subprocess.Popen([args.mock_bin, args.lat_topic, str(args.partitions), args.thr_topic,
                                 str(args.partitions)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        args.brokers = mock.stdout.readline().strip()
        MOCK_TOPICS_EXIST = True
        if "memory" not in args.skip:
            print("memory part left out: the mock cluster cannot hold its backlog")
            args.skip.append("memory")
        print(f"broker: librdkafka's mock cluster at {args.brokers}")
    elif not args.brokers:
        parser.error("--brokers or --mock-bin is required")
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print("gateway: " + args.gateway_bin)
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="kappa-bench-tail-", delete=False)
    config.write("".join(
        f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\ncolumns = "{COLUMNS}"\n'
        for name, topic in (("lat", args.lat_topic), ("thr", args.thr_topic), ("mem", args.mem_topic))
    ))
    config.close()
    try:
        if "latency" not in args.skip:
            bench_latency(args, config.name)
        idle, fast_peak = bench_throughput(args, config.name)
        if "memory" not in args.skip:
            bench_slow_client(args, config.name, idle, fast_peak)
    finally:
        os.unlink(config.name)
        if mock:
            mock.stdin.close()
            mock.wait(10)
    print("\nload average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    sys.exit(main())
