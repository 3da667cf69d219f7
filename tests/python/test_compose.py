"""deploy/compose.yaml, brought up from the images scripts/image.sh builds: records produced from
the host are read through both gateways, the compactor's first commit lands on the shared lake
volume, and the union of lake and Kafka holds every record exactly once, with its values, even
after Kafka deleted what was tiered. The stack is torn down (`down -v`) whatever happens."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from conftest import DEADLINE_S, ROOT, create_topic, delete_records, produce

COMPOSE_FILE = os.path.join(ROOT, "deploy", "compose.yaml")
PARTITIONS = 3
OLD, NEW = 300, 150  # records older than the compactor's --tier-after, and fresh ones
STACK_DEADLINE_S = 180


def docker_compose():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run scripts/test.sh", pytrace=False)
    return binary


def test_the_compose_file_is_valid():
    checker = shutil.which("check-jsonschema") or os.path.join(os.path.dirname(sys.executable), "check-jsonschema")
    run = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", COMPOSE_FILE],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    run = subprocess.run([docker_compose(), "-f", COMPOSE_FILE, "config", "-q"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def bridge_address():
    """The host's address on Docker's default bridge: the host and every container reach it."""
    run = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True, timeout=10)
    found = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", run.stdout)
    assert found, f"no address on docker0: {run.stdout}{run.stderr}"
    return found.group(1)


def free_port(address):
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, env):
        self.project = "kappa" + uuid.uuid4().hex[:12]
        self.env = dict(os.environ, **env)

    def run(self, *args, timeout=STACK_DEADLINE_S):
        return subprocess.run([docker_compose(), "-p", self.project, "-f", COMPOSE_FILE, *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env)

    def check(self, *args):
        run = self.run(*args)
        assert run.returncode == 0, run.stderr
        return run.stdout

    def container(self, service):
        return self.check("ps", "-q", service).strip()

    def published(self, service, port):
        return self.check("port", service, str(port)).strip()

    def wait_healthy(self, service):
        container, deadline, status = self.container(service), time.monotonic() + STACK_DEADLINE_S, None
        while time.monotonic() < deadline:
            status = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", container],
                                    capture_output=True, text=True, timeout=30).stdout.strip()
            if status == "healthy":
                return
            time.sleep(0.5)
        pytest.fail(f"{service} is {status}, not healthy, after {STACK_DEADLINE_S} s:\n{self.logs()}")

    def logs(self):
        return self.run("logs", "--no-color", "--tail", "30").stdout


@pytest.fixture(scope="module")
def stack(kappa_image, broker_image):
    address = bridge_address()
    broker_port = free_port(address)
    stack = Stack({
        "KAPPA_IMAGE": kappa_image,
        "KAPPA_BROKER_IMAGE": broker_image,
        "KAPPA_BROKER_PUBLISH": f"{address}:{broker_port}",
        "KAPPA_BROKER_ADVERTISED": f"{address}:{broker_port}",
        "KAPPA_GATEWAY_1_PUBLISH": "127.0.0.1:",  # a port the system picks
        "KAPPA_GATEWAY_2_PUBLISH": "127.0.0.1:",
        "KAPPA_COMPACTOR_EVERY": "1s",
        "KAPPA_TIER_AFTER": "5m",
    })
    try:
        up = stack.run("up", "-d")
        assert up.returncode == 0, up.stderr + stack.logs()
        stack.wait_healthy("gateway-1")
        stack.wait_healthy("gateway-2")
        stack.brokers = f"{address}:{broker_port}"
        stack.gateways = [f"grpc://{stack.published(s, 50051)}" for s in ("gateway-1", "gateway-2")]
        yield stack
    finally:
        down = stack.run("down", "-v", "--remove-orphans")
        assert down.returncode == 0, down.stderr


def query(uri, sql):
    with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def orders(start, count, now_ms, age_ms):
    return [{
        "partition": i % PARTITIONS,
        "key": f"k{i}".encode(),
        "value": json.dumps({"id": i, "customer": f"c{i % 7}", "amount": i * 1.5}).encode(),
        "timestamp": now_ms - age_ms + i,
    } for i in range(start, start + count)]


def test_both_gateways_read_lake_and_kafka_as_one_exact_table(stack):
    create_topic(stack.brokers, "orders", partitions=PARTITIONS)  # deploy/kappa.toml's table `orders`
    now_ms = int(time.time() * 1000)
    produced = orders(0, OLD, now_ms, age_ms=10 * 60 * 1000) + orders(OLD, NEW, now_ms, age_ms=0)
    produce(stack.brokers, "orders", produced)
    # Offsets in production order, per partition: what each record's (partition, offset) must be.
    expected, next_offset = [], [0] * PARTITIONS
    for r in produced:
        value = json.loads(r["value"])
        expected.append((r["partition"], next_offset[r["partition"]], value["id"], value["customer"], value["amount"]))
        next_offset[r["partition"]] += 1
    old_per_partition = OLD // PARTITIONS

    # The compactor's first commit: every record older than --tier-after (5m) is in the lake.
    deadline, tiered = time.monotonic() + STACK_DEADLINE_S, None
    while time.monotonic() < deadline:
        tiered = query(stack.gateways[0],
                       "SELECT partition, lake_watermark FROM system.partitions WHERE topic = 'orders' ORDER BY 1")
        if len(tiered) == PARTITIONS and all((t["lake_watermark"] or 0) >= old_per_partition for t in tiered):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the compactor tiered nothing in {STACK_DEADLINE_S} s: {tiered}\n{stack.logs()}")

    # Kafka forgets what was tiered: those records now exist in the lake volume only.
    for p in range(PARTITIONS):
        delete_records(stack.brokers, "orders", p, old_per_partition)

    sql = "SELECT _partition, _offset, id, customer, amount FROM orders"
    for uri in stack.gateways:
        rows = sorted(tuple(r.values()) for r in query(uri, sql))
        assert rows == sorted(expected), f"{uri}: not every record exactly once"
        counts = query(uri, "SELECT count(*) AS n, count(DISTINCT (_partition, _offset)) AS d, sum(id) AS s "
                            "FROM orders")
        assert counts == [{"n": OLD + NEW, "d": OLD + NEW, "s": sum(range(OLD + NEW))}]
        lake_side = query(uri, f"SELECT count(*) AS n FROM orders WHERE _offset < {old_per_partition}")
        assert lake_side == [{"n": OLD}]
