"""The gateway's shared memory limit: a query beyond it fails alone, and the gateway stays up."""

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
