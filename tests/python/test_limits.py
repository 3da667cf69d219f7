"""The gateway's limits: a query beyond the shared memory limit or its time fails alone, queries
beyond the concurrency cap wait and then are refused, SQL beyond the size cap is refused, and the
gateway stays up for the next query each time."""

import time

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from conftest import Gateway, create_topic, produce, unique


@pytest.fixture(scope="module")
def wide(brokers):
    """60,000 records of 512 bytes: 31 MB to hold for a join."""
    topic = unique("limits")
    create_topic(brokers, topic, partitions=2)
    for start in range(0, 60_000, 30_000):  # within the producer's queue
        produce(brokers, topic, [{"partition": i % 2, "key": b"%08d" % i, "value": b"x" * 512}
                                 for i in range(start, start + 30_000)])
    return topic


def test_a_query_over_the_memory_limit_fails_alone(brokers, wide):
    gateway = Gateway(brokers, None, ["--memory-limit", "16MiB"])
    try:
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            # A hash join cannot spill: its build side exceeds the limit.
            with pytest.raises(flightsql.Error) as failed:
                cur.execute(f'SELECT count(*) FROM "{wide}" a JOIN "{wide}" b ON a._value = b._value')
                cur.fetchall()
            # ADBC has no status of its own for it: the gRPC code is in the message.
            assert "(ResourceExhausted;" in str(failed.value), str(failed.value)
            assert "HashJoinInput" in str(failed.value)
            # A query that streams holds little, whatever it reads; the gateway is up for everyone.
            cur.execute(f'SELECT count(*), sum(length(_value)) FROM "{wide}"')
            assert cur.fetchall() == [(60_000, 60_000 * 512)]
            cur.execute("SELECT 1 AS one")
            assert cur.fetchall() == [(1,)]
    finally:
        gateway.stop()


# Operators that hold what they read (sorts, aggregates, a function's accumulated state), each past 16 MiB.
HOLDERS = {
    "sort": 'SELECT * FROM "{t}" ORDER BY _value, _key',
    "hash aggregate": 'SELECT _value, count(*) FROM "{t}" GROUP BY _value, _key ORDER BY 2',
    "array_agg": 'SELECT array_agg(_value) FROM "{t}"',
    "string_agg": "SELECT string_agg(CAST(_value AS VARCHAR), ',') FROM \"{t}\"",
    # Joins hold their build side: a cross join all of it, a hash join its table.
    "cross join": 'SELECT max(length(a._value || b._value)) FROM "{t}" a CROSS JOIN "{t}" b',
    "hash join": 'SELECT count(*) FROM "{t}" a JOIN "{t}" b ON a._value = b._value',
}


@pytest.mark.parametrize("what", sorted(HOLDERS))
def test_every_memory_refusal_is_resource_exhausted_in_one_line(brokers, wide, what):
    """Whichever operator the pool refuses, and however it wraps the refusal, the client gets
    ResourceExhausted naming the limit and how to raise it, never Internal or the pool's consumer list.
    (ADBC prints its own status for that gRPC code as "INTERNAL"; the gRPC code is in parentheses.)"""
    gateway = Gateway(brokers, None, ["--memory-limit", "16MiB"])
    try:
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            with pytest.raises(flightsql.Error) as failed:
                cur.execute(HOLDERS[what].format(t=wide))
                cur.fetchall()
            message = str(failed.value)
            assert "(ResourceExhausted;" in message, message
            assert "raise --memory-limit (KAPPA_MEMORY_LIMIT)" in message, message
            assert "top memory consumers" not in message and "\n" not in message.strip(), message
            cur.execute("SELECT 1 AS one")
            assert cur.fetchall() == [(1,)]
    finally:
        gateway.stop()


# A cross join of the 60,000 records with themselves: 3.6 billion rows to count, minutes of work.
ENDLESS = 'SELECT count(*) FROM "{t}" a CROSS JOIN "{t}" b'


def test_a_query_past_the_timeout_is_stopped_and_the_next_one_runs(brokers, wide):
    gateway = Gateway(brokers, None, ["--query-timeout", "2s"])
    try:
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            began = time.monotonic()
            with pytest.raises(flightsql.Error) as stopped:
                cur.execute(ENDLESS.format(t=wide))
                cur.fetchall()
            assert "(DeadlineExceeded;" in str(stopped.value), str(stopped.value)
            assert "--query-timeout" in str(stopped.value)
            assert time.monotonic() - began < 30, "stopped at its deadline, not at its end"
            cur.execute("SELECT 1 AS one")
            assert cur.fetchall() == [(1,)]
    finally:
        gateway.stop()


def test_queries_beyond_the_cap_wait_then_are_refused(brokers, wide):
    gateway = Gateway(brokers, None, ["--max-concurrent-queries", "1", "--queue-timeout", "1s"])
    try:
        with flightsql.connect(gateway.uri, autocommit=True) as busy, busy.cursor() as running, \
                flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            # The one slot: a big scan whose stream is open and not yet read to its end.
            running.execute(f'SELECT * FROM "{wide}"')
            reader = running.fetch_record_batch()
            reader.read_next_batch()
            with pytest.raises(flightsql.Error) as refused:
                cur.execute("SELECT 1")
                cur.fetchall()
            assert "(ResourceExhausted;" in str(refused.value) and "--max-concurrent-queries" in str(refused.value)
            reader.close()
            # The slot is free once that stream is gone.
            deadline = time.monotonic() + 10
            while True:
                try:
                    cur.execute("SELECT 1 AS one")
                    assert cur.fetchall() == [(1,)]
                    break
                except flightsql.Error:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
    finally:
        gateway.stop()


def test_sql_longer_than_the_cap_is_refused(brokers):
    gateway = Gateway(brokers, None, ["--max-sql-bytes", "1KiB"])
    try:
        with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
            with pytest.raises(flightsql.Error) as refused:
                cur.execute("SELECT 1 " + " " * 2000)
            assert "(InvalidArgument;" in str(refused.value) and "--max-sql-bytes" in str(refused.value)
            cur.execute("SELECT 1 AS one")
            assert cur.fetchall() == [(1,)]
    finally:
        gateway.stop()
