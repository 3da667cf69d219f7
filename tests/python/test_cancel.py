"""ADBC's cancel (what a notebook's interrupt or a BI tool's Stop button calls) stops a query's work on
the gateway: its Kafka readers are gone within a second, and the connection serves the next query."""

import os
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pytest

from conftest import Gateway, create_topic, produce, unique

RELEASE_S = 1.0


def scan_threads(gateway):
    """The gateway's Kafka reader threads (named kappa-scan-…), from /proc."""
    tasks = f"/proc/{gateway.process.pid}/task"
    names = []
    for task in os.listdir(tasks):
        try:
            with open(f"{tasks}/{task}/comm") as comm:
                names.append(comm.read().strip())
        except FileNotFoundError:  # the thread ended while we looked
            continue
    return [n for n in names if n.startswith("kappa-scan")]


RECORDS = 120_000


@pytest.fixture(scope="module")
def big(brokers):
    """About 15 batches in one partition: far more than the reader (two batches), the gateway's
    stream and the client (one batch, below) buffer ahead of a client that stops reading."""
    topic = unique("cancel-big")
    create_topic(brokers, topic, partitions=1)
    for _ in range(2):  # a producer queues at most 100,000 records
        produce(brokers, topic, [{"partition": 0, "value": b"x" * 64} for _ in range(RECORDS // 2)])
    gateway = Gateway(brokers)
    yield gateway, topic
    gateway.stop()


def test_adbc_cancel_stops_the_querys_readers(big):
    gateway, topic = big
    with flightsql.connect(gateway.uri, autocommit=True) as conn:
        with conn.cursor() as cur:
            # ADBC fetches ahead into a queue (five batches by default): one, so the gateway's
            # readers are still waiting on the client when it cancels.
            cur.adbc_statement.set_options(**{adbc_driver_flightsql.StatementOptions.QUEUE_SIZE.value: "1"})
            cur.execute(f'SELECT * FROM "{topic}"')
            reader = cur.fetch_record_batch()
            assert reader.read_next_batch().num_rows > 0
            assert scan_threads(gateway), "the readers run while the client holds the stream"
            cur.adbc_cancel()
            cancelled = time.monotonic()
            with pytest.raises(OSError, match="canceled"):  # pyarrow raises ADBC's Canceled as an OSError
                while True:
                    reader.read_next_batch()
            while scan_threads(gateway):
                assert time.monotonic() - cancelled < RELEASE_S, f"still reading: {scan_threads(gateway)}"
                time.sleep(0.02)
        with conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{topic}"')
            assert cur.fetchone() == (RECORDS,)


# A nested-loop join whose filter calls md5 for every pair: minutes of CPU, and no batch boundary for
# long stretches (the join loops over its left side inside one poll).
CPU_BOUND = ("SELECT count(*) FROM generate_series(1, 30000) a CROSS JOIN generate_series(1, 30000) b "
             "WHERE md5(CAST(a.value + b.value AS VARCHAR)) LIKE 'fff%'")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def assert_idle_after(gateway, settle_s=1.0, window_s=2.0):
    """The gateway's work stops within about a second: little CPU in the window after."""
    time.sleep(settle_s)
    before = cpu_seconds(gateway.process.pid)
    time.sleep(window_s)
    used = cpu_seconds(gateway.process.pid) - before
    assert used < 0.3 * window_s, f"the gateway used {used:.1f} s of CPU in {window_s} s after the query ended"


def test_a_cpu_bound_query_stops_at_its_deadline(brokers):
    gateway = Gateway(brokers, extra_args=["--query-timeout", "2s"])
    try:
        started = time.monotonic()
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            with pytest.raises(flightsql.Error, match="query-timeout"):
                cur.execute(CPU_BOUND)
                cur.fetchall()
        assert time.monotonic() - started < 4, "answered within about a second of the deadline"
        assert_idle_after(gateway)
    finally:
        gateway.stop()


def test_adbc_cancel_stops_a_cpu_bound_query(brokers):
    import threading

    gateway = Gateway(brokers)
    try:
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(CPU_BOUND)
            reader = cur.fetch_record_batch()
            threading.Timer(2.0, cur.adbc_cancel).start()
            with pytest.raises(OSError, match="canceled"):
                reader.read_next_batch()
        assert_idle_after(gateway)
    finally:
        gateway.stop()


def test_cpu_bound_queries_never_keep_the_gateway_from_answering(brokers):
    """Queries execute on a runtime apart from the one serving calls: with more CPU-bound queries running
    than the gateway has threads, a new client still connects, gets answers that need no execution, and can
    cancel a running query, each within a second or two. (On one runtime, three such queries on two cores
    left a new connection without its HTTP/2 preface until they ended.)"""
    import threading

    gateway = Gateway(brokers, extra_args=["--query-timeout", "60s"])
    busy = (os.cpu_count() or 2) + 2
    ended = []

    def run():
        try:
            with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute(CPU_BOUND)
                cur.fetchall()
        except Exception as e:  # noqa: BLE001 (stopped with the gateway, or cancelled)
            ended.append(str(e))

    threads = [threading.Thread(target=run, daemon=True) for _ in range(busy)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(3)  # every one planned and running
        assert not ended, ended
        started = time.monotonic()
        with flightsql.connect(gateway.uri, autocommit=True) as conn:
            assert "table" in conn.adbc_get_table_types()
            assert conn.adbc_get_info()["vendor_name"]
        assert time.monotonic() - started < 2, f"answered in {time.monotonic() - started:.1f} s"
        # And a query started now can be cancelled at once, whatever the others hold.
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(CPU_BOUND)
            reader = cur.fetch_record_batch()
            threading.Timer(1.0, cur.adbc_cancel).start()
            cancelled = time.monotonic()
            with pytest.raises(OSError, match="canceled"):
                reader.read_next_batch()
            assert time.monotonic() - cancelled < 3
    finally:
        gateway.process.kill()  # not a clean shutdown: it would wait for the busy queries
        gateway.stop()


def test_a_function_cannot_build_a_value_past_the_memory_limit(brokers):
    gateway = Gateway(brokers, extra_args=["--memory-limit", "256MiB"])
    try:
        started = time.monotonic()
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            with pytest.raises(flightsql.Error, match="ResourceExhausted") as refused:
                cur.execute("SELECT length(repeat('x', 2000000000)) AS n")
                cur.fetchall()
            assert "repeat() would build 2000000000 bytes" in str(refused.value)
            assert "--memory-limit" in str(refused.value)
            cur.execute("SELECT length(repeat('x', 1000)) AS n")
            assert cur.fetchall() == [(1000,)]
        assert time.monotonic() - started < 5
    finally:
        gateway.stop()
