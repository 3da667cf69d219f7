"""PollFlightInfo: ADBC's incremental execution runs a query in the background and reports its
progress (Kafka offsets and lake rows read, of those the plan reads) until it answers the result."""

import json
import threading
import time

import pytest

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_manager import StatementOptions

from conftest import Gateway, create_topic, produce, query, unique

RECORDS = 200_000


@pytest.fixture(scope="module")
def big(brokers):
    name = unique("progress")
    create_topic(brokers, name, partitions=2)
    # In slices: the producer's queue holds 100,000 messages.
    for start in range(0, RECORDS, 50_000):
        produce(brokers, name, [{"partition": i % 2, "value": json.dumps({"id": i, "pad": "x" * (i % 50)}).encode()}
                                for i in range(start, start + 50_000)])
    return name


def incremental(gateway, sql, watch_every=0.02):
    """`sql` run incrementally: its result, and the progress values seen while it ran."""
    seen = []
    with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{StatementOptions.INCREMENTAL.value: "true"})
        done = threading.Event()

        def watch():
            while not done.is_set():
                seen.append(cur.adbc_statement.get_option_float(StatementOptions.PROGRESS.value))
                time.sleep(watch_every)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            partitions, _ = cur.adbc_execute_partitions(sql)
            rest, _ = cur.adbc_execute_partitions(sql)
        finally:
            done.set()
            watcher.join()
        assert rest == [], "a second call after the end answers no more partitions"
        tables = []
        for partition in partitions:
            cur.adbc_read_partition(partition)
            tables.append(cur.fetch_arrow_table())
    return tables, seen


def test_a_polled_query_reports_its_progress_then_answers_what_a_plain_one_does(brokers, big):
    gateway = Gateway(brokers, None, [])
    try:
        sql = f'SELECT count(*) AS n, sum(length(_value)) AS bytes, max(_offset) AS last FROM "{big}"'
        tables, seen = incremental(gateway, sql)
        assert len(tables) == 1 and tables[0] == query(gateway, sql)
        assert tables[0].to_pydict()["n"] == [RECORDS]
        # The scan's share was reported on the way: more than nothing, less than all.
        assert any(0 < p < 1 for p in seen), seen
        assert seen == sorted(seen) or seen[-1] == 0.0, "progress never goes back (before the reset at the end)"
    finally:
        gateway.stop()


def test_a_polled_query_that_fails_answers_its_error_and_a_result_is_fetched_once(brokers, big):
    gateway = Gateway(brokers, None, [])
    try:
        # Fails while it runs (the first poll has already answered): a later poll answers the error.
        with pytest.raises(flightsql.Error) as failed:
            incremental(gateway, f'SELECT CAST(CAST(_value AS VARCHAR) AS INT) FROM "{big}"')
        assert "Cannot cast string" in str(failed.value), str(failed.value)
        # Results of a few rows, one at a time: each fetched from its own ticket.
        for n in (1, 2):
            tables, _ = incremental(gateway, f"SELECT {n} AS n")
            assert tables[0].to_pydict() == {"n": [n]}
    finally:
        gateway.stop()


def test_a_query_across_gateways_reports_the_records_its_tasks_read_on_each(brokers, big):
    """The scans of a distributed query run on the gateways its tasks were sent to, whose metrics
    reach the coordinator only at the end: each poll asks every gateway what its tasks have read."""
    workers = [Gateway(brokers, None, ["--worker"]) for _ in range(2)]
    coordinator = Gateway(brokers, None, ["--workers", ",".join(f"http://{w.address}" for w in workers),
                                          "--offsets-per-task", "20000"])
    try:
        sql = f'SELECT count(*) AS n, sum(length(_value)) AS bytes, max(_offset) AS last FROM "{big}"'
        # Once the coordinator's health checks have seen the workers answer, it runs across them.
        deadline = time.monotonic() + 15
        while "DistributedExec" not in (explained := "\n".join(
                query(coordinator, f"EXPLAIN {sql}").column("plan").to_pylist())):
            assert time.monotonic() < deadline, explained
            time.sleep(0.5)
        tables, seen = incremental(coordinator, sql)
        assert tables[0].to_pydict()["n"] == [RECORDS]
        running = [p for p in seen if 0 < p < 1]
        assert running, seen
        assert running == sorted(running), "progress never goes back"
        # The coordinator runs about a third of the scan's tasks: more than half read is the
        # other gateways' share counted too.
        assert max(running) > 0.5, seen
    finally:
        for gateway in [coordinator, *workers]:
            gateway.stop()
