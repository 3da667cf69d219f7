"""Table maintenance: checkpoints while tiering, OPTIMIZE and VACUUM under a lease, and the run's
summary, checked with independent readers (the `deltalake` package, DuckDB over the listed files)."""

import json
import os
import subprocess
import time
from datetime import datetime

import pytest
from deltalake import DeltaTable

from conftest import DEADLINE_S, produce
from test_compactor import PARTITIONS, compactor, duckdb_offsets, lake_rows, orders, s3, table  # noqa: F401


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
    # It says what the retention keeps (the rewritten files and the orphan) and until when.
    waiting = len(files_before - live)
    dry = maintain("vacuum", table, "--dry-run")
    first = dry.stdout.splitlines()[0]
    assert first.startswith(f"{table['path'].name}: would delete 0 files; the 7days retention keeps "
                            f"{waiting} more files, deletable from "), first
    week = time.time() + 7 * 24 * 3600
    for stamp in first.split("deletable from ")[1].split(" to "):
        at = datetime.fromisoformat(stamp).timestamp()
        assert week - 600 < at <= week + 60, first

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


def test_on_s3_of_three_optimize_jobs_at_once_one_rewrites_and_no_row_is_doubled(brokers, table, s3):
    from test_compactor import offsets_of

    produce(brokers, table["topic"], orders(200))
    env = dict(os.environ, KAPPA_LOG="warn", **s3["options"])
    binary = os.environ["KAPPA_COMPACTOR_BIN"]
    lake = ["--lake", "s3://lake/kappa", "--config", str(table["config"])]
    run = subprocess.run([binary, "run", "--once", "--brokers", brokers, *lake, "--tier-after", "0s",
                          "--max-records-per-commit", "20"], capture_output=True, text=True, env=env,
                         timeout=DEADLINE_S * 4)
    assert run.returncode == 0, run.stderr
    uri = f"s3://lake/kappa/tables/{table['name']}"
    version = DeltaTable(uri, storage_options=s3["options"]).version()

    jobs = [subprocess.Popen([binary, "optimize", *lake], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for _ in range(3)]
    outcomes = [(job.wait(DEADLINE_S * 4), *job.communicate()) for job in jobs]
    done = [out for code, out, _ in outcomes if code == 0]
    refused = [err for code, _, err in outcomes if code != 0]
    # Each job either ran (and released the lease) or found it held; none rewrote a rewrite.
    assert done and all("lease is held" in err for err in refused), outcomes
    dt = DeltaTable(uri, storage_options=s3["options"])
    assert dt.version() - version == sum("files rewritten into" in out and " 0 files rewritten" not in out
                                         for out in done), "one OPTIMIZE commit per job that rewrote files"
    keys = sorted((r["_partition"], r["_offset"])
                  for r in dt.to_pyarrow_table(columns=["_partition", "_offset"]).to_pylist())
    assert len(keys) == len(set(keys)) == 200
    for p, (low, high) in offsets_of(brokers, table["topic"]).items():
        assert sorted(o for q, o in keys if q == p) == list(range(low, high))


def test_optimize_while_tiering_goes_on_doubles_and_loses_nothing(brokers, table):
    from test_compactor import offsets_of

    binary = os.environ["KAPPA_COMPACTOR_BIN"]
    tier_in_small_commits(brokers, table, count=120, per_commit=10)
    service = subprocess.Popen([binary, "run", "--every", "50ms", "--brokers", brokers, "--lake", str(table["lake"]),
                                "--config", str(table["config"]), "--tier-after", "0s",
                                "--max-records-per-commit", "10"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, KAPPA_LOG="warn"))
    try:
        optimized = 0
        for round in range(6):
            produce(brokers, table["topic"], orders(40, start=120 + 40 * round))
            run = maintain("optimize", table)
            # A race with a tiering commit may make an OPTIMIZE fail cleanly; it is simply rerun.
            optimized += run.returncode == 0
        assert optimized >= 1
        deadline = time.time() + DEADLINE_S
        while sum(watermarks(table["path"]).values()) < 360 and time.time() < deadline:
            time.sleep(0.1)
    finally:
        service.terminate()
        service.wait(DEADLINE_S)
    dt, rows = lake_rows(table["path"])
    keys = sorted((r["_partition"], r["_offset"]) for r in rows)
    assert len(keys) == len(set(keys)) == 360, "every record once"
    for p, (low, high) in offsets_of(brokers, table["topic"]).items():
        assert sorted(o for q, o in keys if q == p) == list(range(low, high))


def test_sigterm_finishes_the_commit_in_flight_and_the_next_run_goes_on_from_it(brokers, table):
    import signal

    produce(brokers, table["topic"], orders(600))
    binary = os.environ["KAPPA_COMPACTOR_BIN"]
    args = [binary, "run", "--every", "1h", "--brokers", brokers, "--lake", str(table["lake"]),
            "--config", str(table["config"]), "--tier-after", "0s", "--max-records-per-commit", "5"]
    service = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, KAPPA_LOG="info"))
    log = table["path"] / "_delta_log"
    deadline = time.time() + DEADLINE_S
    while len(list(log.glob("*.json"))) < 4 and time.time() < deadline:
        time.sleep(0.02)
    service.send_signal(signal.SIGTERM)
    out, err = service.communicate(timeout=DEADLINE_S)
    assert service.returncode == 0, err
    assert "stopped early" in out, out
    tiered = sum(watermarks(table["path"]).values())
    assert 0 < tiered < 600, "it stopped partway, at a commit"
    _, rows = lake_rows(table["path"])
    assert len(rows) == tiered, "what was committed is exactly what the watermarks say"

    assert compactor(brokers, table["lake"], table["config"], "--tier-after", "0s").returncode == 0
    _, rows = lake_rows(table["path"])
    keys = {(r["_partition"], r["_offset"]) for r in rows}
    assert len(rows) == len(keys) == 600
