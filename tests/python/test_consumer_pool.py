"""Scan consumers are pooled between queries: one left by a cancelled, failed or poisoned query is
never reused in a bad state (no stale record, no lost position), however queries alternate."""

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from conftest import Gateway, create_topic, produce, unique


@pytest.fixture(scope="module")
def topics(brokers):
    big, small = unique("pool-big"), unique("pool-small")
    create_topic(brokers, big, partitions=2)
    create_topic(brokers, small, partitions=2)
    produce(brokers, big, [{"partition": i % 2, "value": b"big-%d" % i} for i in range(40_000)])
    produce(brokers, small, [{"partition": i % 2, "value": b'{"n": %d}' % i} for i in range(40)]
            + [{"partition": 1, "value": b"{poison"}])
    return big, small


def test_queries_after_cancelled_failed_and_poisoned_ones_read_exactly_their_rows(brokers, topics):
    big, small = topics
    config = f'[[tables]]\nname = "small_json"\ntopic = "{small}"\nformat = "json"\ncolumns = "n BIGINT"\n'
    gateway = Gateway(brokers, config)
    expected = {(p, o) for p in (0, 1) for o in range(20)} | {(1, 20)}
    try:
        with flightsql.connect(gateway.uri, autocommit=True) as conn:
            for _ in range(4):
                # Cancelled: the client reads one batch of a big scan and goes away.
                with conn.cursor() as cur:
                    cur.execute(f'SELECT * FROM "{big}"')
                    reader = cur.fetch_record_batch()
                    assert reader.read_next_batch().num_rows > 0
                    reader.close()
                # Failed: the query errors while its consumers are reading.
                with conn.cursor() as cur, pytest.raises(flightsql.Error):
                    cur.execute(f'SELECT CAST(CAST(_value AS VARCHAR) AS INT) FROM "{big}"')
                    cur.fetchall()
                # Poisoned: an undecodable record is a row with _error.
                with conn.cursor() as cur:
                    cur.execute("SELECT _partition, _offset, n, _error FROM small_json")
                    rows = cur.fetch_arrow_table().to_pylist()
                    assert {(r["_partition"], r["_offset"]) for r in rows} == expected
                    assert len(rows) == len(expected)
                    assert [r["_offset"] for r in rows if r["_error"]] == [20]
                # Then other ranges of the same partitions read exactly their rows.
                with conn.cursor() as cur:
                    cur.execute(f'SELECT _value FROM "{big}" WHERE _partition = 1 AND _offset BETWEEN 10 AND 14')
                    assert [v for (v,) in cur.fetchall()] == [b"big-%d" % (2 * o + 1) for o in range(10, 15)]
                    cur.execute(f'SELECT _partition, _offset FROM "{small}" ORDER BY 1, 2')
                    assert set(cur.fetchall()) == expected
    finally:
        gateway.stop()


def test_queries_after_a_broker_outage_read_exactly_their_rows():
    """Consumers pooled before the brokers went down, and those of the queries that failed while
    they were down, are never reused in a bad state: once the broker is back, queries read exactly
    the rows the topic has."""
    import subprocess
    import time
    from pathlib import Path

    from conftest import DEADLINE_S

    broker_sh = str(Path(__file__).resolve().parents[2] / "scripts" / "broker.sh")
    started = subprocess.run(["bash", broker_sh, "start", "0"], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    brokers = started.stdout.strip()
    port = brokers.rsplit(":", 1)[1]
    topic = unique("pool-outage")
    gateway = None
    try:
        create_topic(brokers, topic, partitions=2)
        produce(brokers, topic, [{"partition": i % 2, "value": b"v-%d" % i} for i in range(30_000)])
        gateway = Gateway(brokers, extra_args=["--kafka-request-timeout", "1s", "--kafka-fetch-timeout", "2s"])
        expected = {(p, o) for p in (0, 1) for o in range(15_000)}

        def rows():
            with flightsql.connect(gateway.uri, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute(f'SELECT _partition, _offset, _value FROM "{topic}"')
                table = cur.fetch_arrow_table()
            return {(p, o): v for p, o, v in zip(*(table.column(c).to_pylist() for c in
                                                     ("_partition", "_offset", "_value")))}

        assert set(rows()) == expected  # fills the pool
        subprocess.run(["bash", broker_sh, "stop", port], check=True, timeout=60)
        began = time.monotonic()
        with pytest.raises((flightsql.Error, OSError)) as failed:
            rows()
        assert "Unavailable" in str(failed.value), str(failed.value)
        assert time.monotonic() - began < DEADLINE_S

        restarted = subprocess.run(["bash", broker_sh, "restart", port], capture_output=True, text=True, timeout=120)
        assert restarted.returncode == 0, restarted.stderr
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                found = rows()
                break
            except (flightsql.Error, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert set(found) == expected
        assert all(found[(p, o)] == b"v-%d" % (2 * o + p) for p, o in found), "every row has its own value"
        for _ in range(3):
            assert set(rows()) == expected
    finally:
        if gateway:
            gateway.stop()
        subprocess.run(["bash", broker_sh, "stop", port], timeout=60)
