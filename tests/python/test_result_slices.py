"""A large answer fetched in parallel: across a cluster, GetFlightInfo gives an answer that is
its slices' answers put together as one endpoint per gateway, each with that gateway's location and
a ticket carrying the pinned snapshot and its slice. ADBC fetches them at once; every slice reads
its share of one snapshot, so together they are the answer a gateway on its own gives."""

import json
import time

import pyarrow as pa
import pyarrow.flight as fl
import pytest

from conftest import Gateway, create_topic, flight_sql_command, produce, query, unique
from test_compactor import compactor

PARTITIONS = 3
RECORDS = 9_000
TIERED = 6_000
REUSE = "arrow-flight-reuse-connection://?"
# Small enough that these few records are worth three slices (the default is 200,000 per task).
OFFSETS_PER_TASK = ["--offsets-per-task", "1000", "--lake-rows-per-task", "1000"]


def orders(start, count):
    return [{"partition": i % PARTITIONS, "key": b"k%d" % (i % 101),
             "value": json.dumps({"id": i, "customer": f"c{i % 17}", "amount": i * 0.5}).encode()}
            for i in range(start, start + count)]


@pytest.fixture(scope="module")
def cluster(brokers, tmp_path_factory):
    """A table whose older records the compactor tiered into the lake, over a topic that is a
    table too; three gateways over it (a coordinator listing two workers), and one alone."""
    topic = unique("slices")
    create_topic(brokers, topic, partitions=PARTITIONS)
    name = "sliced_" + topic.split("-")[-1]
    folder = tmp_path_factory.mktemp("slices")
    config = folder / "kappa.toml"
    config.write_text(f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\n'
                      f'columns = "id BIGINT, customer VARCHAR, amount DOUBLE"\n')
    lake = folder / "lake"
    produce(brokers, topic, orders(0, TIERED))
    run = compactor(brokers, lake, config, "--tier-after", "0s", "--max-records-per-commit", "1000")
    assert run.returncode == 0, run.stderr
    produce(brokers, topic, orders(TIERED, RECORDS - TIERED))
    args = ["--lake", str(lake)]
    text = config.read_text()
    workers = [Gateway(brokers, text, [*args, "--worker"]) for _ in range(2)]
    coordinator = Gateway(brokers, text, [*args, "--workers", ",".join(f"http://{w.address}" for w in workers),
                                          *OFFSETS_PER_TASK])
    alone = Gateway(brokers, text, args)
    yield {"topic": topic, "table": name, "coordinator": coordinator, "workers": workers, "alone": alone}
    for gateway in [coordinator, alone, *workers]:
        gateway.stop()


def flight_info(gateway, sql, wait_for=1):
    """GetFlightInfo for `sql`, asked again (for a few of the coordinator's health checks, while
    the workers join) until it has `wait_for` endpoints."""
    client = fl.FlightClient(gateway.uri)
    try:
        deadline = time.monotonic() + 15
        while True:
            info = client.get_flight_info(fl.FlightDescriptor.for_command(flight_sql_command(sql)))
            if len(info.endpoints) >= wait_for or time.monotonic() > deadline:
                return info
            time.sleep(0.5)
    finally:
        client.close()


def locations(endpoint):
    return [location.uri.decode() for location in endpoint.locations]


def fetch(endpoint, uri, options=None):
    """One endpoint's slice, fetched from the gateway at `uri`."""
    client = fl.FlightClient(uri)
    try:
        return client.do_get(endpoint.ticket, options).read_all()
    finally:
        client.close()


def rows(table, *keys):
    return sorted(table.to_pylist(), key=lambda row: tuple(row[k] for k in keys))


def test_a_large_answer_is_sliced_one_endpoint_per_gateway_of_one_snapshot(brokers, cluster):
    coordinator, topic = cluster["coordinator"], cluster["topic"]
    sql = f'SELECT _partition, _offset, _key, length(_value) AS width FROM "{topic}" WHERE _offset % 2 = 0'
    info = flight_info(coordinator, sql, wait_for=3)
    assert len(info.endpoints) == 3, info
    # The first slice on the client's own connection; each other at a worker, else here.
    places = [locations(e) for e in info.endpoints]
    assert places[0] == [], places
    assert {p[0] for p in places[1:]} == {f"grpc+tcp://{w.address}" for w in cluster["workers"]}, places
    assert all(p[1:] == [REUSE] for p in places[1:]), places
    # Records produced since are not in the answer: every slice reads the pinned snapshot.
    produce(brokers, topic, orders(RECORDS, 600))
    slices = [fetch(e, p[0] if p else coordinator.uri) for e, p in zip(info.endpoints, places)]
    whole = query(cluster["alone"], sql.replace("WHERE", f"WHERE _offset < {RECORDS // PARTITIONS} AND"))
    assert all(s.num_rows > 0 for s in slices), [s.num_rows for s in slices]
    # Even shares, none read twice, and together the answer.
    assert max(s.num_rows for s in slices) <= 1.2 * min(s.num_rows for s in slices), [s.num_rows for s in slices]
    keys = [{(r["_partition"], r["_offset"]) for r in s.to_pylist()} for s in slices]
    assert sum(len(k) for k in keys) == len(set().union(*keys)) == whole.num_rows
    assert rows(pa.concat_tables(slices), "_partition", "_offset") == rows(whole, "_partition", "_offset")
    # Any gateway serves any slice: all of them from the coordinator give the same.
    again = [fetch(e, coordinator.uri) for e in info.endpoints]
    assert [s.num_rows for s in again] == [s.num_rows for s in slices]


def test_adbc_fetches_the_slices_of_a_tiered_table_and_gets_the_whole_answer(cluster):
    """Both tiers sliced alike: each slice reads its share of the lake's rows and of Kafka's."""
    table = cluster["table"]
    sql = f'SELECT id, customer, amount, _partition, _offset FROM "{table}" WHERE amount >= 10'
    info = flight_info(cluster["coordinator"], sql, wait_for=3)
    assert len(info.endpoints) == 3, info
    slices = [fetch(e, locations(e)[0] if locations(e) else cluster["coordinator"].uri) for e in info.endpoints]
    ids = [set(s.column("id").to_pylist()) for s in slices]
    assert all(ids) and sum(len(i) for i in ids) == len(set().union(*ids)), [len(i) for i in ids]
    # ADBC follows the endpoints' locations itself (in parallel).
    got = query(cluster["coordinator"], sql)
    expected = query(cluster["alone"], sql)
    assert got.num_rows == expected.num_rows == sum(len(i) for i in ids) > 0
    assert rows(got, "id") == rows(expected, "id")


def test_ordered_aggregated_limited_and_small_answers_keep_one_endpoint(cluster):
    coordinator, topic, table = cluster["coordinator"], cluster["topic"], cluster["table"]
    flight_info(coordinator, f'SELECT _offset FROM "{topic}"', wait_for=3)
    for sql in [
        f'SELECT _partition, _offset FROM "{topic}" ORDER BY _offset',
        f'SELECT _partition, count(*) AS n FROM "{topic}" GROUP BY 1',
        f'SELECT _offset FROM "{topic}" LIMIT 5000',
        f'SELECT a._offset FROM "{topic}" a JOIN "{table}" b ON a._offset = b._offset',
        f'SELECT _offset FROM "{topic}" UNION ALL SELECT 1',
        # Fewer records than two slices' worth.
        f'SELECT _offset FROM "{topic}" WHERE _partition = 0 AND _offset < 1500',
    ]:
        info = flight_info(coordinator, sql)
        assert len(info.endpoints) == 1 and locations(info.endpoints[0]) == [], sql
    # A caller replaying a token of its own gets its answer whole.
    sql = f'SELECT _offset FROM "{topic}"'
    token = json.loads(flight_info(coordinator, sql, wait_for=3).app_metadata)["snapshot"]
    client = fl.FlightClient(coordinator.uri)
    try:
        options = fl.FlightCallOptions(headers=[(b"kappa.snapshot", token.encode())])
        replayed = client.get_flight_info(fl.FlightDescriptor.for_command(flight_sql_command(sql)), options)
    finally:
        client.close()
    assert len(replayed.endpoints) == 1
    # A gateway on its own gives one endpoint.
    assert len(flight_info(cluster["alone"], f'SELECT _offset FROM "{topic}"').endpoints) == 1


def test_signed_in_the_slices_are_fetched_with_the_callers_token_on_every_gateway(brokers, cluster, tmp_path):
    """With --users, ADBC sends the token the coordinator's handshake issued to the other gateways'
    locations; gateways sharing --token-secret accept it, and check the caller's grants as they plan
    their slice."""
    import adbc_driver_flightsql.dbapi as flightsql
    from conftest import hash_password
    users = tmp_path / "users.toml"
    users.write_text(f'[[users]]\nname = "analyst"\npassword_hash = "{hash_password("s3cret")}"\n'
                     f'tables = ["slices-*"]\n')
    signed = ["--users", str(users), "--token-secret", "the cluster's secret"]
    worker = Gateway(brokers, None, [*signed, "--worker"])
    coordinator = Gateway(brokers, None, [*signed, "--workers", f"http://{worker.address}", *OFFSETS_PER_TASK])

    def signed_in(gateway, sql):
        with flightsql.connect(gateway.uri, db_kwargs={"username": "analyst", "password": "s3cret"},
                               autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    try:
        sql = f'SELECT _partition, _offset, _key FROM "{cluster["topic"]}"'
        client = fl.FlightClient(coordinator.uri)
        header = client.authenticate_basic_token(b"analyst", b"s3cret")
        options = fl.FlightCallOptions(headers=[header])
        descriptor = fl.FlightDescriptor.for_command(flight_sql_command(sql))
        deadline = time.monotonic() + 15
        while len((info := client.get_flight_info(descriptor, options)).endpoints) < 2:
            assert time.monotonic() < deadline, "the coordinator never sliced the answer"
            time.sleep(0.5)
        client.close()
        assert locations(info.endpoints[1])[0] == f"grpc+tcp://{worker.address}"
        got = signed_in(coordinator, sql)
        assert got.num_rows > 0 and rows(got, "_partition", "_offset") == rows(signed_in(worker, sql), "_partition", "_offset")
        # The worker serves its slice to the token the coordinator issued, and not without it.
        assert fetch(info.endpoints[1], f"grpc://{worker.address}", options).num_rows > 0
        with pytest.raises(fl.FlightUnauthenticatedError):
            fetch(info.endpoints[1], f"grpc://{worker.address}")
    finally:
        coordinator.stop()
        worker.stop()
