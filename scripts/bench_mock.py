"""Full-scan speed on librdkafka's mock cluster: kappa through ADBC against kcat and a plain
confluent-kafka consumer building a pandas DataFrame, on the same topic in the same run; and the
same orders as Avro and as Protobuf in the Confluent wire format (a mock cluster each, the schema in
the test double of a schema registry, tests/registry), against kcat on that topic.

Not part of the test run: scripts/bench_mock.sh builds the binaries and calls this."""

import argparse
import json
import os
import platform
import subprocess
import tempfile
import threading
import statistics
import time

import base64
import io
import struct
import sys

import adbc_driver_flightsql.dbapi as flightsql
import fastavro
import pandas as pd
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "registry"))
import test_registry  # noqa: E402 (the registry test double)

ORDER_AVRO = {"type": "record", "name": "Order", "namespace": "bench", "fields": [
    {"name": "id", "type": "long"}, {"name": "customer", "type": "string"},
    {"name": "amount", "type": "double"}, {"name": "pad", "type": "string"}]}


def order_proto():
    """The same order as a Protobuf message, built without protoc: (the registered schema, its class)."""
    f = descriptor_pb2.FileDescriptorProto(name="bench/order.proto", package="bench", syntax="proto3")
    message = f.message_type.add(name="Order")
    kinds = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate([("id", kinds.TYPE_INT64), ("customer", kinds.TYPE_STRING),
                                           ("amount", kinds.TYPE_DOUBLE), ("pad", kinds.TYPE_STRING)], 1):
        message.field.add(name=name, number=number, type=kind, label=kinds.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(f.SerializeToString())
    schema = base64.standard_b64encode(f.SerializeToString()).decode()
    return schema, message_factory.GetMessageClass(pool.FindMessageTypeByName("bench.Order"))


MOCK_MAX_RECORDS_PER_PARTITION = 100_000
MOCK_MAX_BYTES_PER_PARTITION = 5_000_000


def produce(brokers, topic, records, partitions, value_bytes=None, avro_id=None, protobuf=None):
    """JSON orders spread over the partitions; `value_bytes` pads each value to about that size
    (default: a 40-byte pad, values of about 100 bytes); with `avro_id`, the same orders in Avro,
    framed with that schema id; with `protobuf` (schema id, message class), in Protobuf, framed with
    the id and the index path [0]. Returns the bytes of the values."""
    schema = fastavro.parse_schema(ORDER_AVRO)
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20, "queue.buffering.max.messages": 1_000_000,
                         "queue.buffering.max.kbytes": 1_048_576, "batch.num.messages": 10_000})
    now = int(time.time() * 1000)
    size = 0
    for i in range(records):
        value = {"id": i, "customer": f"c{i % 100}", "amount": i * 0.5, "pad": "x" * 40}
        if value_bytes is not None:
            value["pad"] = ""
            value["pad"] = "x" * max(0, value_bytes - len(json.dumps(value)))
        if protobuf is not None:
            value = b"\x00" + struct.pack(">I", protobuf[0]) + b"\x00" + protobuf[1](**value).SerializeToString()
        elif avro_id is None:
            value = json.dumps(value).encode()
        else:
            out = io.BytesIO()
            out.write(b"\x00" + struct.pack(">I", avro_id))
            fastavro.schemaless_writer(out, schema, value)
            value = out.getvalue()
        size += len(value)
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions, timestamp=now)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0
    return size


def median(runs, fn):
    """fn's result, and the median and spread ((max - min) / median) of its time over `runs` runs."""
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    mid = statistics.median(times)
    return result, mid, (max(times) - min(times)) / mid


def kcat(brokers, topic):
    # The fetch wait kappa's scans use: with librdkafka's default 500 ms, waiting for the last
    # fetch is about half of kcat's run time.
    subprocess.run(["kcat", "-b", brokers, "-C", "-t", topic, "-e", "-o", "beginning", "-q",
                    "-X", "fetch.wait.max.ms=10"], stdout=subprocess.DEVNULL, check=True)


def pandas_consumer(brokers, topic, partitions):
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "bench", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    rows, done = [], set()
    while len(done) < partitions:
        for message in consumer.consume(10_000, 1.0):
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    done.add(message.partition())
                continue
            record = json.loads(message.value())
            record["_partition"], record["_offset"] = message.partition(), message.offset()
            rows.append(record)
    consumer.close()
    return len(pd.DataFrame(rows))


def kappa(uri, sql):
    with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
        return table.column(0)[0].as_py() if sql.lstrip().upper().startswith("SELECT COUNT") else table.num_rows


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_framed(args, gateway_bin, kind):
    """The orders as Confluent-framed `kind` ("Avro" or "Protobuf") on a mock cluster of their own:
    kcat and kappa's full scans, records/s by label."""
    topic = f"bench-{kind.lower()}"
    registry, registry_url = test_registry.serve()
    mock = subprocess.Popen([args.mock_bin, topic, str(args.partitions)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    gateway = None
    try:
        brokers = mock.stdout.readline().strip()
        from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

        client = SchemaRegistryClient({"url": registry_url})
        if kind == "Avro":
            schema_id = client.register_schema(f"{topic}-value", Schema(json.dumps(ORDER_AVRO), "AVRO"))
            size = produce(brokers, topic, args.records, args.partitions, avro_id=schema_id)
        else:
            schema, cls = order_proto()
            schema_id = client.register_schema(f"{topic}-value", Schema(schema, "PROTOBUF"))
            size = produce(brokers, topic, args.records, args.partitions, protobuf=(schema_id, cls))
        print(f"produced {args.records} {kind} records ({size / 1e6:.0f} MB)")
        gateway = subprocess.Popen([gateway_bin, "serve", "--listen", "127.0.0.1:0", "--brokers", brokers,
                                    "--schema-registry", registry_url, "--log-filter", "warn"],
                                   stdout=subprocess.PIPE, text=True)
        uri = "grpc://" + gateway.stdout.readline().strip().removeprefix("listening on ")
        assert kappa(uri, f'SELECT count(*) FROM "{topic}" WHERE _error IS NULL') == args.records
        _, kcat_s, spread = median(args.runs, lambda: kcat(brokers, topic))
        out = {f"kcat on the {kind} topic": (args.records / kcat_s, spread)}
        for label, sql in [
            (f"kappa count(*) of the {kind} topic", f'SELECT count(*) FROM "{topic}"'),
            (f"kappa SELECT * of the {kind} topic", f'SELECT * FROM "{topic}"'),
        ]:
            rows, elapsed, spread = median(args.runs, lambda sql=sql: kappa(uri, sql))
            assert rows == args.records, (label, rows)
            out[label] = (args.records / elapsed, spread)
        return out
    finally:
        if gateway:
            gateway.terminate()
            gateway.wait(10)
        mock.stdin.close()
        mock.wait(10)
        registry.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gateway-bin", required=True)
    parser.add_argument("--mock-bin", required=True)
    parser.add_argument("--records", type=int, default=960_000)
    parser.add_argument("--partitions", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    per_partition = -(-args.records // args.partitions)
    if per_partition > MOCK_MAX_RECORDS_PER_PARTITION:
        raise SystemExit(f"{per_partition} records per partition: the mock keeps at most "
                         f"{MOCK_MAX_RECORDS_PER_PARTITION}; use more partitions")

    topic = "bench"
    mock = subprocess.Popen([args.mock_bin, topic, str(args.partitions)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    gateway = None
    try:
        brokers = mock.stdout.readline().strip()
        started = time.perf_counter()
        size = produce(brokers, topic, args.records, args.partitions)
        if size / args.partitions > MOCK_MAX_BYTES_PER_PARTITION:
            raise SystemExit("more than 5 MB per partition: the mock would drop records; use more partitions")
        print(f"produced {args.records} records ({size / 1e6:.0f} MB) to {args.partitions} partitions "
              f"in {time.perf_counter() - started:.1f} s")
        config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        config.write(f'[[tables]]\nname = "orders"\ntopic = "{topic}"\nformat = "json"\n'
                     'columns = "id BIGINT, customer VARCHAR, amount DOUBLE, pad VARCHAR"\n')
        config.close()
        gateway = subprocess.Popen([args.gateway_bin, "serve", "--listen", "127.0.0.1:0", "--brokers", brokers,
                                    "--config", config.name, "--log-filter", "warn"],
                                   stdout=subprocess.PIPE, text=True)
        uri = "grpc://" + gateway.stdout.readline().strip().removeprefix("listening on ")
        assert kappa(uri, "SELECT count(*) FROM orders") == args.records, "kappa does not see every record"

        _, kcat_s, spread = median(args.runs, lambda: kcat(brokers, topic))
        base = args.records / kcat_s
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; medians of {args.runs} runs; "
              "spread = (slowest - fastest) / median\n")
        print(f"{'reader':44s} {'records/s':>12s} {'vs kcat':>8s} {'spread':>7s}")
        print(f"{'kcat -C -e -o beginning (baseline)':44s} {base:12.0f} {1:8.2f} {spread:7.0%}")
        results = {}
        for label, sql in [
            ("kappa count(*) of the JSON table", "SELECT count(*) FROM orders"),
            ("kappa SELECT * of the JSON table", "SELECT * FROM orders"),
            ("kappa SELECT * of the raw topic", f'SELECT * FROM "{topic}"'),
        ]:
            rows, elapsed, spread = median(args.runs, lambda sql=sql: kappa(uri, sql))
            assert rows == args.records, (label, rows)
            results[label] = args.records / elapsed
            print(f"{label:44s} {results[label]:12.0f} {results[label] / base:8.2f} {spread:7.0%}")
        for kind in ("Avro", "Protobuf"):
            framed = bench_framed(args, args.gateway_bin, kind)
            for label, (rate, spread) in framed.items():
                ratio = rate / framed[f"kcat on the {kind} topic"][0]
                print(f"{label:44s} {rate:12.0f} {ratio:8.2f} {spread:7.0%}  (vs kcat on that topic)")
        rows, pandas_s, _ = median(1, lambda: pandas_consumer(brokers, topic, args.partitions))
        assert rows == args.records, rows
        pandas_rate = args.records / pandas_s
        print(f"{'confluent-kafka consumer into pandas':44s} {pandas_rate:12.0f} {pandas_rate / base:8.2f}")
        json_rate = results["kappa SELECT * of the JSON table"]
        print(f"\nkappa SELECT * (JSON) vs the pandas consumer: {json_rate / pandas_rate:.1f}x")
        print(f"gateway peak RSS: {peak_rss_mib(gateway.pid):.0f} MiB")
    finally:
        if gateway:
            gateway.terminate()
            gateway.wait(10)
        mock.stdin.close()
        mock.wait(10)


if __name__ == "__main__":
    main()
