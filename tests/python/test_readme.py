"""The README against what the demo and the binaries do: its examples find rows in the demo's data,
its counts are the demo's, and what it says of logging is what the gateway does."""

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from conftest import DEADLINE_S, Gateway, unique

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DEMO = (ROOT / "scripts" / "demo.sh").read_text()


def demo_batches():
    """The arguments of each run of the demo's producer in scripts/demo.sh."""
    return [re.findall(r"--(partitions|count|first-id) (\d+)", line)
            for line in DEMO.splitlines() if "demo_data.py" in line]


@pytest.fixture(scope="module")
def demo(brokers):
    """The demo's orders, made by its producer with its arguments (in a topic of their own), read through
    deploy/kappa.toml's definition of `orders`."""
    topic = unique("demo-orders")
    for batch in demo_batches():
        args = [arg for name, value in batch for arg in (f"--{name}", value)]
        subprocess.run([sys.executable, str(ROOT / "scripts" / "demo_data.py"), "--brokers", brokers,
                        "--topic", topic, *args], check=True, capture_output=True, timeout=DEADLINE_S * 2)
    config = (ROOT / "deploy" / "kappa.toml").read_text()
    config, replaced = re.subn(r'^topic = "orders"', f'topic = "{topic}"', config, flags=re.M)
    assert replaced == 1, "deploy/kappa.toml declares the table orders on the topic orders"
    gateway = Gateway(brokers, config)
    yield gateway
    gateway.stop()


def test_the_parameter_examples_find_orders_in_the_demo_data(demo):
    found = re.search(r'cur\.execute\("(SELECT [^"]*customer = \?[^"]*)", parameters=\("([^"]*)", (\d+)\)\)',
                      README)
    assert found, "the README's parameter example"
    sql, customer, offset = found.group(1), found.group(2), int(found.group(3))
    with flightsql.connect(demo.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql, parameters=(customer, offset))
        assert cur.fetch_arrow_table().num_rows > 0, f"{sql} with {customer!r}: no rows on the demo's data"
        for customer in re.findall(r'orders\.c\.customer == "([^"]*)"', README):
            cur.execute("SELECT count(*) AS n FROM orders WHERE customer = ?", parameters=(customer,))
            assert cur.fetch_arrow_table().column("n")[0].as_py() > 0, f"no orders of {customer!r} in the demo"


def test_the_readme_counts_the_orders_the_demo_produces(demo):
    counts = [int(value) for batch in demo_batches() for name, value in batch if name == "count"]
    total = sum(counts)
    with flightsql.connect(demo.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM orders")
        assert cur.fetch_arrow_table().column("n")[0].as_py() == total
    assert f"all {total:,}" in README, f"the README's count of the demo's orders is not {total:,}"
    assert f"{counts[0]:,} JSON records" in README


def log_filter_row():
    return next(line for line in README.splitlines() if line.startswith("| `--log-filter`"))


def test_the_log_filter_default_is_the_binarys():
    help_text = subprocess.run([os.environ["KAPPA_GATEWAY_BIN"], "serve", "--help"], capture_output=True,
                               text=True, check=True).stdout
    default = re.search(r"--log-filter <LOG_FILTER>.*?\[default: ([^\]]+)\]", help_text, re.S).group(1)
    assert f"`{default}`" in log_filter_row()


def test_the_query_log_targets_are_the_ones_the_readme_names(brokers):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAPPA_")}  # the default filter
    process = subprocess.Popen([os.environ["KAPPA_GATEWAY_BIN"], "serve", "--listen", "127.0.0.1:0",
                                "--brokers", brokers, "--lake", "file:///nonexistent-kappa-lake"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr], daemon=True).start()
    try:
        address = process.stdout.readline().split(" ", 2)[2].strip()
        with flightsql.connect(f"grpc://{address}", autocommit=True) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetch_arrow_table()
            with pytest.raises(Exception):
                cur.execute("SELEC 1")
        targets = {}
        deadline = time.monotonic() + DEADLINE_S
        while len(targets) < 2 and time.monotonic() < deadline:
            line = lines.get(timeout=DEADLINE_S)
            found = re.search(r"INFO (\S+): (query done|query rejected)", line)
            if found:
                targets[found.group(2)] = found.group(1)
    finally:
        process.terminate()
        process.wait(DEADLINE_S)
    assert set(targets) == {"query done", "query rejected"}, targets
    for message, target in targets.items():
        assert f"`{target}`" in log_filter_row(), f"{message} is logged at {target}"
