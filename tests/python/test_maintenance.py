"""Table maintenance: checkpoints while tiering, OPTIMIZE and VACUUM under a lease, and the run's
summary, checked with independent readers (the `deltalake` package, DuckDB over the listed files)."""

import json
import os
import subprocess
import time

import pytest
from deltalake import DeltaTable

from conftest import DEADLINE_S, produce
from test_compactor import PARTITIONS, compactor, duckdb_offsets, lake_rows, orders, table  # noqa: F401


def maintain(command, table, *flags):
    binary = os.environ["KAPPA_COMPACTOR_BIN"]
    args = [binary, command, "--lake", str(table["lake"]), "--config", str(table["config"]), *flags]
    return subprocess.run(args, capture_output=True, text=True, timeout=DEADLINE_S * 4,
                          env=dict(os.environ, KAPPA_LOG="warn"))


def watermarks(path):
    dt = DeltaTable(str(path))
    return {p: dt.transaction_version(f"kappa/{path.name}/{p}") for p in range(PARTITIONS)}


def tier_in_small_commits(brokers, table, count=300, per_commit=25):
    produce(brokers, table["topic"], orders(count))
    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s",
                    "--max-records-per-commit", str(per_commit))
    assert run.returncode == 0, run.stderr
    return run


def test_a_run_prints_a_summary_and_writes_checkpoints(brokers, table):
    run = tier_in_small_commits(brokers, table)
    # 300 offsets in commits of 25, after the creating commit: versions 1..12.
    assert "300 records in 12 commits" in run.stdout, run.stdout
    assert "tiered 1 tables (3 partitions), 0 failed: 300 records" in run.stdout, run.stdout
    log = table["path"] / "_delta_log"
    checkpoints = sorted(p.name for p in log.glob("*.checkpoint.parquet"))
    assert checkpoints == ["00000000000000000010.checkpoint.parquet"], checkpoints
    # A reader starting from the checkpoint sees the watermarks and every record.
    dt, rows = lake_rows(table["path"])
    assert dt.version() == 12 and len(rows) == 300
    assert sum(watermarks(table["path"]).values()) == 300


def test_optimize_rewrites_small_files_and_keeps_every_record_and_watermark(brokers, table):
    tier_in_small_commits(brokers, table)
    before_files = len(DeltaTable(str(table["path"])).file_uris())
    before_marks = watermarks(table["path"])
    _, before_rows = lake_rows(table["path"])

    run = maintain("optimize", table)
    assert run.returncode == 0, run.stderr
    dt, rows = lake_rows(table["path"])
    after_files = dt.file_uris()
    assert len(after_files) < before_files, (before_files, after_files)
    assert f"{before_files} files rewritten into {len(after_files)}" in run.stdout, run.stdout
    key = lambda r: (r["_partition"], r["_offset"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(before_rows, key=key), "OPTIMIZE changed the rows"
    assert sorted(duckdb_offsets(dt)) == sorted(key(r) for r in before_rows), "DuckDB sees each row once"
    assert watermarks(table["path"]) == before_marks, "OPTIMIZE kept the watermarks"

    # Tiering goes on from the watermarks after an OPTIMIZE.
    produce(brokers, table["topic"], orders(30, start=300))
    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    _, rows = lake_rows(table["path"])
    assert len(rows) == len({key(r) for r in rows}) == 330


def test_a_table_whose_lease_is_held_is_left_alone_until_it_is_free(brokers, table):
    tier_in_small_commits(brokers, table, count=60)
    lease = table["path"] / "_kappa" / "lease"
    lease.mkdir(parents=True)
    held = {"owner": "other-host/pid 7/abcd", "job": "optimize", "released": False,
            "expires_at_ms": int(time.time() * 1000) + 60_000}
    (lease / f"{1:020}.json").write_text(json.dumps(held))
    version = DeltaTable(str(table["path"])).version()

    for command in ("optimize", "vacuum"):
        run = maintain(command, table)
        assert run.returncode != 0
        assert "its lease is held by other-host/pid 7/abcd running optimize" in run.stderr, run.stderr
    assert DeltaTable(str(table["path"])).version() == version, "nothing committed under another's lease"

    # The holder died: once its lease expires, the next job takes it over.
    (lease / f"{1:020}.json").write_text(json.dumps(dict(held, expires_at_ms=int(time.time() * 1000) - 1)))
    run = maintain("optimize", table)
    assert run.returncode == 0, run.stderr
    assert DeltaTable(str(table["path"])).version() == version + 1


def test_vacuum_deletes_rewritten_and_orphaned_files_only_past_the_retention(brokers, table):
    tier_in_small_commits(brokers, table, count=100)
    assert maintain("optimize", table).returncode == 0
    dt, rows = lake_rows(table["path"])
    live = {os.path.basename(u) for u in dt.file_uris()}
    # A file a crashed run wrote but never committed.
    day = next(p for p in table["path"].iterdir() if p.name.startswith("_date="))
    orphan = day / "part-00000-crashed-run.zstd.parquet"
    orphan.write_bytes((day / next(iter(live & {p.name for p in day.iterdir()}))).read_bytes())
    files_before = {p.name for p in table["path"].rglob("*.parquet") if "_delta_log" not in str(p)}

    kept = maintain("vacuum", table)  # default retention: 7 days, everything is younger
    assert kept.returncode == 0, kept.stderr
    assert "deleted 0 files" in kept.stdout, kept.stdout

    dry = maintain("vacuum", table, "--retention", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    would = {os.path.basename(line.strip()) for line in dry.stdout.splitlines()[1:]}
    assert orphan.name in would and not (would & live), (would, live)
    assert {p.name for p in table["path"].rglob("*.parquet") if "_delta_log" not in str(p)} == files_before

    run = maintain("vacuum", table, "--retention", "0s")
    assert run.returncode == 0, run.stderr
    left = {p.name for p in table["path"].rglob("*.parquet") if "_delta_log" not in str(p)}
    assert left == live, "only the files the latest version lists are left"
    dt, after = lake_rows(table["path"])
    assert len(after) == len(rows) == 100


def test_maintenance_of_a_table_never_tiered_says_so(table):
    run = maintain("optimize", table)
    assert run.returncode != 0
    assert "no Delta table at" in run.stderr and "kappa-compactor run" in run.stderr, run.stderr


@pytest.mark.parametrize("command", ["optimize", "vacuum"])
def test_maintenance_needs_no_broker(command, brokers, table):
    tier_in_small_commits(brokers, table, count=50)
    binary = os.environ["KAPPA_COMPACTOR_BIN"]
    run = subprocess.run([binary, command, "--lake", str(table["lake"]), "--config", str(table["config"])],
                         capture_output=True, text=True, timeout=DEADLINE_S * 4,
                         env=dict(os.environ, KAPPA_LOG="warn", KAPPA_BROKERS="127.0.0.1:1"))
    assert run.returncode == 0, run.stderr
