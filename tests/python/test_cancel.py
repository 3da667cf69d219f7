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
