"""The compactor tiers topics into Delta Lake exactly once, as independent readers see it:
the `deltalake` package (the Delta log, txn watermarks) and DuckDB (the Parquet files the log lists)."""

import json
import os
import subprocess
import time

import duckdb
import pytest
from confluent_kafka import TopicPartition
from deltalake import DeltaTable

from conftest import DEADLINE_S, create_topic, delete_records, produce, unique

PARTITIONS = 3


def compactor(brokers, lake, config, *flags):
    binary = os.environ.get("KAPPA_COMPACTOR_BIN")
    if not binary:
        pytest.fail("KAPPA_COMPACTOR_BIN is not set: run scripts/test.sh", pytrace=False)
    args = [binary, "run", "--once", "--brokers", brokers, "--lake", str(lake), "--config", str(config), *flags]
    return subprocess.run(args, capture_output=True, text=True, timeout=DEADLINE_S * 4, env=dict(os.environ, KAPPA_LOG="warn"))


def orders(count, start=0, now_ms=None, age_ms=0):
    now_ms = now_ms or int(time.time() * 1000)
    out = []
    for i in range(start, start + count):
        value = json.dumps({"id": i, "customer": f"c{i % 5}", "amount": i * 1.5}).encode()
        if i == start + count // 2:
            value = b"{poison"  # undecodable, in the middle of a partition
        out.append({
            "partition": i % PARTITIONS,
            "key": f"k{i}".encode(),
            "value": value,
            "headers": [("n", str(i).encode()), ("n", None)],
            "timestamp": now_ms - age_ms + i,
        })
    return out


@pytest.fixture()
def table(brokers, tmp_path):
    topic = unique("tier")
    create_topic(brokers, topic, partitions=PARTITIONS)
    name = "orders_" + topic.split("-")[-1]
    config = tmp_path / "kappa.toml"
    config.write_text(
        f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\n'
        f'columns = "id BIGINT, customer VARCHAR, amount DOUBLE"\n'
    )
    lake = tmp_path / "lake"
    return {"topic": topic, "name": name, "config": config, "lake": lake, "path": lake / "tables" / name}


def offsets_of(brokers, topic):
    """(partition, offset) -> record, in production order per partition."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": unique("g"), "enable.auto.commit": False})
    seen = {}
    for p in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=DEADLINE_S)
        seen[p] = (low, high)
    consumer.close()
    return seen


def lake_rows(path):
    dt = DeltaTable(str(path))
    rows = dt.to_pyarrow_table(columns=["_partition", "_offset", "id", "_error", "_value", "_headers", "_key"]).to_pylist()
    return dt, rows


def duckdb_offsets(dt):
    files = dt.file_uris()
    con = duckdb.connect()
    return con.execute(
        f"SELECT _partition, _offset FROM read_parquet({files!r}) ORDER BY 1, 2"
    ).fetchall()


def test_every_offset_lands_exactly_once_with_its_values(brokers, table):
    records = orders(300)
    produce(brokers, table["topic"], records)
    # Small commits, so a run makes several and each carries its watermarks.
    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s", "--max-records-per-commit", "70")
    assert run.returncode == 0, run.stderr

    dt, rows = lake_rows(table["path"])
    keys = sorted((r["_partition"], r["_offset"]) for r in rows)
    assert len(keys) == len(set(keys)) == 300
    marks = offsets_of(brokers, table["topic"])
    for p, (low, high) in marks.items():
        assert sorted(o for q, o in keys if q == p) == list(range(low, high))
        assert dt.transaction_version(f"kappa/{table['name']}/{p}") == high
    assert duckdb_offsets(dt) == keys, "DuckDB over the listed files sees the same offsets"

    by_key = {r["_key"]: r for r in rows}
    poison = by_key[b"k150"]
    assert poison["id"] is None and "invalid JSON" in poison["_error"]
    assert poison["_value"] == b"{poison", "the raw bytes of a bad record are kept"
    good = by_key[b"k7"]
    assert good["id"] == 7 and good["_error"] is None and good["_value"] is None
    assert good["_headers"] == [{"key": "n", "value": b"7"}, {"key": "n", "value": None}]
    assert dt.version() >= 4, "300 offsets in commits of at most 70"


def test_a_rerun_is_a_no_op_and_new_records_are_added_once(brokers, table):
    produce(brokers, table["topic"], orders(90))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    version = DeltaTable(str(table["path"])).version()

    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    assert DeltaTable(str(table["path"])).version() == version, "nothing new: no new Delta version"

    produce(brokers, table["topic"], orders(60, start=90))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    dt, rows = lake_rows(table["path"])
    assert dt.version() == version + 1
    keys = [(r["_partition"], r["_offset"]) for r in rows]
    assert len(keys) == len(set(keys)) == 150
    assert sorted(r["id"] for r in rows if r["id"] is not None) == sorted(
        i for i in range(150) if i not in (45, 90 + 30)
    )


def test_only_records_older_than_tier_after_are_tiered(brokers, table):
    now = int(time.time() * 1000)
    produce(brokers, table["topic"], orders(30, now_ms=now, age_ms=2 * 3600 * 1000))
    produce(brokers, table["topic"], orders(30, start=30, now_ms=now))
    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "1h")
    assert run.returncode == 0, run.stderr
    _, rows = lake_rows(table["path"])
    assert len(rows) == 30
    assert all(r["_key"] in {f"k{i}".encode() for i in range(30)} for r in rows)


def test_records_deleted_before_tiering_stop_the_table_unless_allowed(brokers, table):
    produce(brokers, table["topic"], orders(30))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    produce(brokers, table["topic"], orders(30, start=30))
    delete_records(brokers, table["topic"], 0, 15)

    refused = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s")
    assert refused.returncode != 0
    assert "partition 0: offsets 10..15" in refused.stderr, refused.stderr
    version = DeltaTable(str(table["path"])).version()

    allowed = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s", "--allow-data-loss")
    assert allowed.returncode == 0, allowed.stderr
    dt = DeltaTable(str(table["path"]))
    assert dt.version() == version + 1
    lost = json.loads(json.dumps(dt.history(1)[0]["kappa.lost_offsets"]))
    assert lost == [{"partition": 0, "start": 10, "end": 15}]
    _, rows = lake_rows(table["path"])
    assert len(rows) == 60 - 5


def start_compactor(brokers, table, *flags):
    binary = os.environ["KAPPA_COMPACTOR_BIN"]
    args = [binary, "run", "--once", "--brokers", brokers, "--lake", str(table["lake"]),
            "--config", str(table["config"]), "--tier-after", "0s", *flags]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, KAPPA_LOG="warn"))


def assert_exactly_once(brokers, table, count):
    dt, rows = lake_rows(table["path"])
    keys = sorted((r["_partition"], r["_offset"]) for r in rows)
    assert len(keys) == len(set(keys)) == count, f"{len(keys)} rows, {len(set(keys))} distinct, {count} produced"
    for p, (low, high) in offsets_of(brokers, table["topic"]).items():
        assert sorted(o for q, o in keys if q == p) == list(range(low, high))
        assert dt.transaction_version(f"kappa/{table['name']}/{p}") == high
    assert duckdb_offsets(dt) == keys


def test_killed_at_random_points_then_finished_it_is_still_exactly_once(brokers, table):
    import random

    rng = random.Random(int(time.time()))
    produce(brokers, table["topic"], orders(900))
    # Tiny commits, so kills land mid-read, mid-write and mid-commit.
    flags = ("--max-records-per-commit", "15")
    for _ in range(12):
        process = start_compactor(brokers, table, *flags)
        time.sleep(rng.uniform(0.05, 0.6))
        process.kill()
        process.wait(DEADLINE_S)
    finished = start_compactor(brokers, table, *flags)
    _, stderr = finished.communicate(timeout=DEADLINE_S * 4)
    assert finished.returncode == 0, stderr
    assert_exactly_once(brokers, table, 900)


def test_three_compactors_at_once_never_duplicate(brokers, table):
    produce(brokers, table["topic"], orders(600))
    processes = [start_compactor(brokers, table, "--max-records-per-commit", "40") for _ in range(3)]
    for process in processes:
        _, stderr = process.communicate(timeout=DEADLINE_S * 4)
        assert process.returncode == 0, stderr
    assert_exactly_once(brokers, table, 600)


@pytest.fixture()
def s3(tmp_path):
    """A real S3 server (moto's server mode) on a free port, with a bucket; in memory, per test."""
    import socket

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import sys

    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")  # the venv's
    server = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    options = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "kappa",
        "AWS_SECRET_ACCESS_KEY": "kappa",
    }
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="kappa", aws_secret_access_key="kappa")
    deadline = time.time() + DEADLINE_S
    while True:
        try:
            client.create_bucket(Bucket="lake")
            break
        except Exception:
            if time.time() > deadline:
                server.kill()
                raise
            time.sleep(0.1)
    yield {"options": options, "client": client}
    server.kill()
    server.wait(DEADLINE_S)


def test_on_s3_three_compactors_at_once_are_exactly_once(brokers, table, s3, tmp_path):
    produce(brokers, table["topic"], orders(450))
    env = dict(os.environ, KAPPA_LOG="warn", **s3["options"])
    binary = os.environ["KAPPA_COMPACTOR_BIN"]
    args = [binary, "run", "--once", "--brokers", brokers, "--lake", "s3://lake/kappa",
            "--config", str(table["config"]), "--tier-after", "0s", "--max-records-per-commit", "40"]
    processes = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(3)]
    for process in processes:
        _, stderr = process.communicate(timeout=DEADLINE_S * 4)
        assert process.returncode == 0, stderr

    dt = DeltaTable(f"s3://lake/kappa/tables/{table['name']}", storage_options=s3["options"])
    rows = dt.to_pyarrow_table(columns=["_partition", "_offset"]).to_pylist()
    keys = sorted((r["_partition"], r["_offset"]) for r in rows)
    assert len(keys) == len(set(keys)) == 450
    for p, (low, high) in offsets_of(brokers, table["topic"]).items():
        assert sorted(o for q, o in keys if q == p) == list(range(low, high))
        assert dt.transaction_version(f"kappa/{table['name']}/{p}") == high

    # DuckDB over the files the log lists (fetched from the bucket: DuckDB's S3 support is an
    # extension it downloads, which this machine cannot).
    local = []
    for i, uri in enumerate(dt.file_uris()):
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        path = tmp_path / f"f{i}.parquet"
        s3["client"].download_file(bucket, key, str(path))
        local.append(str(path))
    con = duckdb.connect()
    assert con.execute(f"SELECT _partition, _offset FROM read_parquet({local!r}) ORDER BY 1, 2").fetchall() == keys


def test_shards_split_the_partitions_and_together_tier_everything_once(brokers, table):
    produce(brokers, table["topic"], orders(300))
    processes = [start_compactor(brokers, table, "--shard", f"{i}/2", "--max-records-per-commit", "30") for i in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=DEADLINE_S * 4)
        assert process.returncode == 0, stderr
    assert_exactly_once(brokers, table, 300)
