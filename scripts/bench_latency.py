"""Small-query latency through ADBC: SELECT 1, and count(*) on a 3,000-record, 3-partition topic
(p50 of sequential queries, and queries/s with 32 concurrent clients), with the broker's own cost
for the same read by a plain confluent-kafka consumer in the same run.

Not part of the test run: scripts/bench_latency.sh starts the broker and builds the gateway."""

import argparse
import statistics
import subprocess
import threading
import time
import uuid

import adbc_driver_flightsql.dbapi as flightsql
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def p50_ms(fn, n):
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--gateway-bin", required=True)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()

    topic = f"lat-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.brokers})
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
    producer = Producer({"bootstrap.servers": args.brokers, "linger.ms": 5})
    for i in range(3000):
        producer.produce(topic, value=b'{"id": %d}' % i, partition=i % 3)
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": "lat", "enable.auto.commit": False,
                         "enable.partition.eof": True, "fetch.wait.max.ms": 10})

    def plain_read():
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        done, rows = set(), 0
        while len(done) < 3:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    done.add(message.partition())
                continue
            rows += 1
        consumer.unassign()
        assert rows == 3000, rows

    gateway = subprocess.Popen([args.gateway_bin, "serve", "--listen", "127.0.0.1:0", "--brokers", args.brokers,
                                "--log-filter", "warn"], stdout=subprocess.PIPE, text=True)
    try:
        uri = "grpc://" + gateway.stdout.readline().strip().removeprefix("listening on ")
        conn = flightsql.connect(uri, autocommit=True)
        cur = conn.cursor()

        def query(sql):
            cur.execute(sql)
            return cur.fetchall()

        select_1 = p50_ms(lambda: query("SELECT 1"), args.queries)
        count = p50_ms(lambda: query(f'SELECT count(*) FROM "{topic}"'), args.queries)
        plain = p50_ms(plain_read, args.queries)
        print(f"SELECT 1 through ADBC                         p50 {select_1:7.1f} ms")
        print(f"count(*) of 3,000 records in 3 partitions     p50 {count:7.1f} ms")
        print(f"the same read by a plain consumer (reused)    p50 {plain:7.1f} ms   (the broker's own cost)")
        print(f"gateway's share: {count - plain:+.1f} ms")

        done = time.monotonic() + args.seconds
        counts = [0] * args.clients
        errors = []

        def client(i):
            try:
                with flightsql.connect(uri, autocommit=True) as c, c.cursor() as k:
                    while time.monotonic() < done:
                        k.execute(f'SELECT count(*) FROM "{topic}"')
                        assert k.fetchall() == [(3000,)]
                        counts[i] += 1
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        kappa_rate = sum(counts) / elapsed
        print(f"{args.clients} concurrent clients, count(*):          {kappa_rate:7.1f} queries/s"
              f" ({len(errors)} errors{': ' + str(errors[0])[:200] if errors else ''})")

        # The broker's own limit: as many plain consumers doing the same read at once.
        done = time.monotonic() + args.seconds
        reads = [0] * args.clients

        def plain_client(i):
            c = Consumer({"bootstrap.servers": args.brokers, "group.id": "lat", "enable.auto.commit": False,
                          "enable.partition.eof": True, "fetch.wait.max.ms": 10})
            while time.monotonic() < done:
                c.assign([TopicPartition(topic, p, 0) for p in range(3)])
                finished = set()
                while len(finished) < 3:
                    m = c.poll(1.0)
                    if m is not None and m.error() and m.error().code() == KafkaError._PARTITION_EOF:
                        finished.add(m.partition())
                c.unassign()
                reads[i] += 1
            c.close()

        threads = [threading.Thread(target=plain_client, args=(i,)) for i in range(args.clients)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        plain_rate = sum(reads) / (time.monotonic() - start)
        print(f"{args.clients} concurrent plain consumers, same read: {plain_rate:7.1f} reads/s"
              f"   (kappa / broker limit: {kappa_rate / plain_rate:.2f})")
    finally:
        gateway.terminate()
        gateway.wait(10)


if __name__ == "__main__":
    main()
