"""Scan throughput: kappa (through ADBC Flight SQL) against a raw consumer of
the same topic, measured in the same run on the same broker. Prints the ratio.

Not part of the test run: scripts/bench.sh starts the broker and gateway."""

import argparse
import json
import subprocess
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def produce(brokers, topic, count, partitions):
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": "-1"})])[topic].result(30)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 50, "queue.buffering.max.messages": 1_000_000})
    now = int(time.time() * 1000)
    for i in range(count):
        value = {"id": i, "customer": f"c{i % 100}", "amount": i * 0.5, "pad": "x" * 120}
        producer.produce(topic, value=json.dumps(value).encode(), partition=i % partitions, timestamp=now)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0


def raw_consumer(brokers, topic, partitions):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "bench", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    started, rows, eof = time.perf_counter(), 0, 0
    while eof < partitions:
        for message in consumer.consume(10_000, 1.0):
            if message.error():
                eof += 1
            else:
                rows += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return rows, elapsed


def kappa(uri, sql):
    with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(sql)
        table = cur.fetch_arrow_table()
        return table.num_rows, time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--gateway-bin", required=True)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=2)
    args = parser.parse_args()

    topic = f"bench-{int(time.time())}"
    produce(args.brokers, topic, args.records, args.partitions)
    config = f'[[tables]]\nname = "orders"\ntopic = "{topic}"\nformat = "json"\ncolumns = "id BIGINT, customer VARCHAR, amount DOUBLE"\n'
    with open(f"/tmp/{topic}.toml", "w") as f:
        f.write(config)
    gateway = subprocess.Popen(
        [args.gateway_bin, "serve", "--listen", "127.0.0.1:0", "--brokers", args.brokers, "--config", f"/tmp/{topic}.toml"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        address = gateway.stdout.readline().strip().removeprefix("listening on ")
        uri = f"grpc://{address}"
        rows, base = raw_consumer(args.brokers, topic, args.partitions)
        assert rows == args.records, rows
        print(f"{'baseline: confluent-kafka consumer':52s} {rows / base:10.0f} records/s")
        for label, sql in [
            ("kappa raw table, SELECT *", f'SELECT * FROM "{topic}"'),
            ("kappa JSON table, SELECT *", "SELECT * FROM orders"),
            ("kappa JSON table, GROUP BY", "SELECT customer, sum(amount) FROM orders GROUP BY customer"),
        ]:
            _, elapsed = kappa(uri, sql)
            print(f"{label:52s} {args.records / elapsed:10.0f} records/s  {base / elapsed:5.2f}x baseline speed")
    finally:
        gateway.terminate()
        gateway.wait(10)


if __name__ == "__main__":
    sys.exit(main())
