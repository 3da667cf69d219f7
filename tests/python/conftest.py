"""Fixtures for client tests: the real broker (from scripts/test.sh), the real
gateway binary on port 0, and confluent-kafka to produce test data."""

import os
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

DEADLINE_S = 30


def _required_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run scripts/test.sh", pytrace=False)
    return value


@pytest.fixture(scope="session")
def brokers():
    return _required_env("KAPPA_BROKERS")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(brokers, name, partitions=1):
    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.create_topics(
        [NewTopic(name, partitions, 1, config={"retention.ms": "-1"})],
        operation_timeout=DEADLINE_S,
    )
    for future in futures.values():
        future.result(timeout=DEADLINE_S)


def produce(brokers, topic, records):
    """records: iterable of dicts with partition, key, value, headers, timestamp (ms)."""
    producer = Producer({"bootstrap.servers": brokers, "linger.ms": 5})
    errors = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    for r in records:
        producer.produce(
            topic,
            value=r.get("value"),
            key=r.get("key"),
            partition=r.get("partition", 0),
            headers=r.get("headers"),
            timestamp=r.get("timestamp", int(time.time() * 1000)),
            on_delivery=on_delivery,
        )
    remaining = producer.flush(DEADLINE_S)
    assert remaining == 0 and not errors, f"undelivered: {remaining}, errors: {errors}"


def delete_records(brokers, topic, partition, before):
    """DeleteRecords: the partition's log start moves to `before`."""
    from confluent_kafka import TopicPartition

    admin = AdminClient({"bootstrap.servers": brokers})
    futures = admin.delete_records([TopicPartition(topic, partition, before)], request_timeout=DEADLINE_S)
    for future in futures.values():
        future.result(timeout=DEADLINE_S)


class Gateway:
    def __init__(self, brokers, config_text=None, extra_args=()):
        binary = _required_env("KAPPA_GATEWAY_BIN")
        args = [binary, "serve", "--listen", "127.0.0.1:0", "--brokers", brokers, *extra_args]
        self._config = None
        if config_text:
            self._config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
            self._config.write(config_text)
            self._config.close()
            args += ["--config", self._config.name]
        env = dict(os.environ, KAPPA_LOG="warn")
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        self.address = self._wait_for_address()

    def _wait_for_address(self):
        found = {}

        def read():
            for line in self.process.stdout:
                if line.startswith("listening on "):
                    found["addr"] = line.split(" ", 2)[2].strip()
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(DEADLINE_S)
        if "addr" not in found:
            self.stop()
            raise RuntimeError("kappa-gateway did not print its address in time")
        return found["addr"]

    @property
    def uri(self):
        return f"grpc://{self.address}"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if self._config:
            os.unlink(self._config.name)


@pytest.fixture(scope="module")
def orders(brokers):
    """A 3-partition topic of JSON orders (and one bad record), declared as a table."""
    topic = unique("py-orders")
    create_topic(brokers, topic, partitions=3)
    now = int(time.time() * 1000)
    records = [
        {
            "partition": i % 3,
            "key": f"k{i}".encode(),
            "value": f'{{"id": {i}, "customer": "c{i % 7}", "amount": {i * 2.5}}}'.encode(),
            "headers": [("source", b"pytest")],
            "timestamp": now - 1000 + i,
        }
        for i in range(300)
    ]
    records.append({"partition": 0, "key": b"bad", "value": b"{oops", "timestamp": now})
    produce(brokers, topic, records)
    table = "orders_" + topic.split("-")[-1]
    config = (
        f'[[tables]]\nname = "{table}"\ntopic = "{topic}"\nformat = "json"\n'
        f'columns = "id BIGINT, customer VARCHAR, amount DOUBLE"\n'
    )
    gateway = Gateway(brokers, config)
    yield {"gateway": gateway, "table": table, "topic": topic, "count": len(records)}
    gateway.stop()
