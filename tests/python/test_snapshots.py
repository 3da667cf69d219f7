"""Snapshot tokens (issue 24): what a query read, as a value handed back to read it again.

`SELECT token FROM snapshot('t', …)` gives a token of tables as they are now; every statement's
FlightInfo carries the token of what it read in `app_metadata` (`{"snapshot": "<token>"}`). With
the request header `kappa.snapshot: <token>` every table the token names reads exactly that state,
whatever was produced, tiered, rewritten or deleted since; `tail('t', token)` continues where it
ends. Checked against the real broker, gateway and compactor, through ADBC, pyarrow.flight and
SQLAlchemy, without decoding tokens (they are opaque to clients)."""

import json
import os
import re
import subprocess
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as fl
import sqlalchemy
from confluent_kafka.admin import AdminClient
from deltalake import DeltaTable

from conftest import DEADLINE_S, TLS_ROOT, Gateway, create_topic, delete_records, flight_sql_command, produce, unique
from test_compactor import PARTITIONS, compactor, offsets_of, orders, table  # noqa: F401 (fixture)
from test_maintenance import maintain
from test_tail import Stream, produce_acked

HEADER = "kappa.snapshot"
ADBC_HEADER = "adbc.flight.sql.rpc.call_header." + HEADER
TOKEN_TEXT = re.compile(r"^ks1\.[A-Za-z0-9_-]+$")

FULL = "SELECT * FROM {t} ORDER BY _partition, _offset"
BY_PARTITION = (
    "SELECT _partition, count(*) AS n, sum(amount) AS total, min(_offset) AS low, max(_offset) AS high, "
    "count(_error) AS errors FROM {t} GROUP BY _partition ORDER BY _partition"
)
TOTALS = "SELECT count(*) AS n, sum(amount) AS total, count(DISTINCT (_partition, _offset)) AS distinct_rows FROM {t}"


# ---------------------------------------------------------------------------------------------
# Helpers


def connect(gateway, token=None):
    """An ADBC connection; with `token`, every call of it replays the token (a connection header)."""
    db_kwargs = {ADBC_HEADER: token} if token else None
    return flightsql.connect(gateway.uri, db_kwargs=db_kwargs, autocommit=True)


def query(gateway, sql, token=None):
    with connect(gateway, token) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def rows(gateway, sql, token=None):
    return query(gateway, sql, token).to_pylist()


def plan(gateway, sql, token=None):
    """Plans `sql` (GetFlightInfo) and reads nothing: for streams, which would wait for records."""
    with connect(gateway, token) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return "planned"


def take(gateway, *tables):
    """`SELECT token FROM snapshot(…)`: one row, one Utf8 column, a token's text."""
    names = ", ".join(f"'{t}'" for t in tables)
    answer = query(gateway, f"SELECT token FROM snapshot({names})")
    assert answer.num_rows == 1, answer
    assert answer.schema.names == ["token"] and answer.schema.field("token").type == pa.string(), answer.schema
    token = answer.column("token")[0].as_py()
    assert TOKEN_TEXT.match(token), token
    return token


def flight(gateway, sql, token=None):
    """GetFlightInfo(CommandStatementQuery) and DoGet of every endpoint through plain pyarrow.flight,
    with `token` as the `kappa.snapshot` header of both calls: (FlightInfo, Arrow table)."""
    headers = [(HEADER.encode(), token.encode())] if token else []
    options = fl.FlightCallOptions(headers=headers)
    client = fl.FlightClient(gateway.uri)
    try:
        info = client.get_flight_info(fl.FlightDescriptor.for_command(flight_sql_command(sql)), options)
        parts = [client.do_get(endpoint.ticket, options).read_all() for endpoint in info.endpoints]
        return info, pa.concat_tables(parts) if parts else None
    finally:
        client.close()


def token_of(info):
    """The token a FlightInfo carries: `{"snapshot": "<token>"}` in its app_metadata."""
    assert info.app_metadata, "the FlightInfo carries no app_metadata"
    meta = json.loads(info.app_metadata)
    token = meta.get("snapshot")
    assert isinstance(token, str) and TOKEN_TEXT.match(token), meta
    return token


# How each client spells a gRPC status: ADBC "… (DataLoss; DoGet …)" or "INVALID_ARGUMENT: …",
# pyarrow.flight "Flight returned invalid argument error" or "… data loss error …".
CODE_MARKERS = {
    "InvalidArgument": ("(InvalidArgument;", "INVALID_ARGUMENT", "invalid argument error"),
    "DataLoss": ("(DataLoss;", "DATA_LOSS", "data loss error"),
    "PermissionDenied": ("(PermissionDenied;", "PERMISSION_DENIED"),
}


def refused(code, run, *args):
    """Runs `run(*args)`, which must fail with the gRPC status `code`: the error's text."""
    try:
        answer = run(*args)
    except (flightsql.Error, pa.ArrowException) as e:
        text = str(e)
    else:
        raise AssertionError(f"expected {code}, got an answer: {answer}")
    assert any(m in text for m in CODE_MARKERS[code]), f"expected {code}, got: {text}"
    return text


def keys(table_rows):
    return [(r["_partition"], r["_offset"]) for r in table_rows]


def assert_same_rows(got, want, what):
    """Two answers are the same rows in the same order (full rows, every column)."""
    if got == want:
        return
    got_keys, want_keys = keys(got), keys(want)
    missing = sorted(set(want_keys) - set(got_keys))
    extra = sorted(set(got_keys) - set(want_keys))
    changed = [k for k, g, w in zip(got_keys, got, want) if g != w][:3]
    raise AssertionError(
        f"{what}: {len(got)} rows, expected {len(want)}; missing {missing[:10]}, extra {extra[:10]}, "
        f"first differing rows at {changed}"
    )


def lake_gateway(brokers, table):
    return Gateway(brokers, table["config"].read_text(), ["--lake", str(table["lake"])])


def tier(brokers, table, *flags):
    run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s", *flags)
    assert run.returncode == 0, run.stderr
    return run


def json_tables(brokers, *prefixes, partitions=3):
    """Fresh topics declared as JSON tables (id, customer, amount, paid) in one config: {prefix: (name, topic)}."""
    made, config = {}, ""
    for prefix in prefixes:
        topic = unique(f"snap-{prefix}")
        create_topic(brokers, topic, partitions=partitions)
        name = f"{prefix}_" + topic.split("-")[-1]
        made[prefix] = (name, topic)
        config += (f'[[tables]]\nname = "{name}"\ntopic = "{topic}"\nformat = "json"\n'
                   f'columns = "id BIGINT, customer VARCHAR, amount DOUBLE, paid BOOLEAN"\n\n')
    return made, config


def raw_topic(brokers, partitions=1):
    """A fresh topic with no definition (a table of raw bytes, named as the topic)."""
    topic = "snapraw_" + unique("x").split("-")[-1]
    create_topic(brokers, topic, partitions=partitions)
    return topic


def values(partition, count, start=0):
    return [{"partition": partition, "value": f"v{i}".encode()} for i in range(start, start + count)]


def delete_topic(brokers, topic):
    admin = AdminClient({"bootstrap.servers": brokers})
    for future in admin.delete_topics([topic], operation_timeout=DEADLINE_S).values():
        future.result(timeout=DEADLINE_S)
    deadline = time.monotonic() + DEADLINE_S
    while topic in admin.list_topics(timeout=DEADLINE_S).topics:
        assert time.monotonic() < deadline, f"topic {topic} still listed after deleting it"
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Getting a token, replaying it from each client


def test_flight_info_and_snapshot_give_tokens_that_every_client_replays(brokers):
    made, config = json_tables(brokers, "orders")
    name, topic = made["orders"]
    produce(brokers, topic, orders(30))  # 10 per partition
    gateway = Gateway(brokers, config)
    try:
        count = f"SELECT count(*) AS n FROM {name}"
        info, answer = flight(gateway, count)
        assert answer.to_pylist() == [{"n": 30}]
        from_info = token_of(info)
        # A statement that reads no kappa table carries no token.
        info, answer = flight(gateway, "SELECT 1 AS one")
        assert answer.to_pylist() == [{"one": 1}]
        assert not info.app_metadata, info.app_metadata
        from_function = take(gateway, name)

        produce(brokers, topic, orders(15, start=30))
        assert rows(gateway, count) == [{"n": 45}], "without a token, a query reads the table as it is now"
        for token in (from_info, from_function):
            # ADBC, on the connection.
            assert rows(gateway, count, token) == [{"n": 30}]
            # ADBC, on one statement of a connection without it.
            with connect(gateway) as conn, conn.cursor() as cur:
                cur.adbc_statement.set_options(**{ADBC_HEADER: token})
                cur.execute(count)
                assert cur.fetch_arrow_table().to_pylist() == [{"n": 30}]
            # pyarrow.flight, with FlightCallOptions headers; the replay's FlightInfo carries a token too.
            info, answer = flight(gateway, count, token)
            assert answer.to_pylist() == [{"n": 30}]
            assert rows(gateway, count, token_of(info)) == [{"n": 30}], "the token of a replay replays it"
            # SQLAlchemy: a `header.` query parameter of the URL.
            engine = sqlalchemy.create_engine(f"adbc+flightsql://{gateway.address}?tls=false&header.{HEADER}={token}")
            try:
                with engine.connect() as conn:
                    assert conn.execute(sqlalchemy.text(count)).scalar() == 30
            finally:
                engine.dispose()
    finally:
        gateway.stop()


def test_a_ticket_reads_the_snapshot_its_flight_info_names_on_any_gateway(brokers):
    made, config = json_tables(brokers, "orders")
    name, topic = made["orders"]
    produce(brokers, topic, orders(30))
    planner, other = Gateway(brokers, config), Gateway(brokers, config)
    clients = [fl.FlightClient(planner.uri), fl.FlightClient(other.uri)]
    try:
        sql = f"SELECT count(*) AS n FROM {name}"
        info = clients[0].get_flight_info(fl.FlightDescriptor.for_command(flight_sql_command(sql)))
        token = token_of(info)
        produce(brokers, topic, orders(12, start=30))
        # Handles are stateless: the gateway that did not plan it plans it again, in the same snapshot.
        for client in reversed(clients):
            assert client.do_get(info.endpoints[0].ticket).read_all().to_pylist() == [{"n": 30}]
        assert rows(other, sql) == [{"n": 42}]
        assert rows(other, sql, token) == [{"n": 30}]
    finally:
        for client in clients:
            client.close()
        planner.stop()
        other.stop()


# ---------------------------------------------------------------------------------------------
# Replay: the same rows whatever happened since


def test_replay_is_identical_after_produce_compaction_optimize_and_delete_records(brokers, table):
    topic, name = table["topic"], table["name"]
    produce(brokers, topic, orders(90))
    tier(brokers, table, "--max-records-per-commit", "30")  # several small files, watermarks 30
    produce(brokers, topic, orders(30, start=90))  # offsets 30..40 of each partition, in Kafka only
    gateway = lake_gateway(brokers, table)
    try:
        info, first = flight(gateway, FULL.format(t=name))
        from_info = token_of(info)
        from_function = take(gateway, name)  # nothing produced in between: the same state
        before = first.to_pylist()
        assert len(before) == 120
        aggregates = {sql: rows(gateway, sql.format(t=name)) for sql in (BY_PARTITION, TOTALS)}
        assert aggregates[TOTALS][0]["n"] == aggregates[TOTALS][0]["distinct_rows"] == 120
        ends = {r["_partition"]: r["high"] + 1 for r in aggregates[BY_PARTITION]}
        assert ends == {p: 40 for p in range(PARTITIONS)}, ends

        def replays(when):
            for which, token in (("FlightInfo's token", from_info), ("snapshot()'s token", from_function)):
                what = f"{which}, {when}"
                assert_same_rows(rows(gateway, FULL.format(t=name), token), before, what)
                for sql, want in aggregates.items():
                    assert rows(gateway, sql.format(t=name), token) == want, f"{what}: {sql}"
                info, answer = flight(gateway, FULL.format(t=name), token)
                assert_same_rows(answer.to_pylist(), before, f"{what}, through pyarrow.flight")
                assert_same_rows(rows(gateway, FULL.format(t=name), token_of(info)), before,
                                 f"{what}: the token of the replay")

        replays("at once")

        produce(brokers, topic, orders(30, start=120))
        assert rows(gateway, f"SELECT count(*) AS n FROM {name}") == [{"n": 150}]
        replays("after 30 more records")

        version = DeltaTable(str(table["path"])).version()
        tier(brokers, table, "--max-records-per-commit", "20")
        dt = DeltaTable(str(table["path"]))
        marks = {p: dt.transaction_version(f"kappa/{name}/{p}") for p in range(PARTITIONS)}
        assert dt.version() > version and marks == {p: 50 for p in range(PARTITIONS)}, marks
        replays("after the compactor tiered past the token's ends")

        run = maintain("optimize", table)
        assert run.returncode == 0, run.stderr
        assert "files rewritten" in run.stdout, run.stdout
        replays("after OPTIMIZE")
        run = maintain("vacuum", table, "--retention", "0s")  # the files OPTIMIZE replaced are gone
        assert run.returncode == 0, run.stderr
        assert "deleted" in run.stdout, run.stdout
        replays("after OPTIMIZE and VACUUM")

        for p in range(PARTITIONS):
            delete_records(brokers, topic, p, marks[p])
        assert all(low == 50 for low, _ in offsets_of(brokers, topic).values())
        replays("after Kafka deleted everything the lake holds")
        now = rows(gateway, TOTALS.format(t=name))[0]
        assert now["n"] == now["distinct_rows"] == 150, now
    finally:
        gateway.stop()


def test_a_token_taken_before_the_table_had_a_lake_tier_is_read_from_it_once_kafka_deletes(brokers, table):
    topic, name = table["topic"], table["name"]
    produce(brokers, topic, orders(45))
    gateway = lake_gateway(brokers, table)  # its lake has no table yet: Kafka alone
    try:
        info, first = flight(gateway, FULL.format(t=name))
        token = token_of(info)
        before = first.to_pylist()
        assert len(before) == 45
        produce(brokers, topic, orders(15, start=45))
        tier(brokers, table)  # the lake tier is created, past the token's ends
        for p in range(PARTITIONS):
            delete_records(brokers, topic, p, 20)  # Kafka keeps none of it
        assert_same_rows(rows(gateway, FULL.format(t=name), token), before, "from the lake created since")
        assert rows(gateway, f"SELECT count(*) AS n FROM {name}") == [{"n": 60}]
    finally:
        gateway.stop()


def test_queries_under_one_token_agree_while_records_arrive_and_the_compactor_runs(brokers, table):
    topic, name = table["topic"], table["name"]
    produce(brokers, topic, orders(60))
    tier(brokers, table)
    produce(brokers, topic, orders(30, start=60))
    version = DeltaTable(str(table["path"])).version()
    gateway = lake_gateway(brokers, table)
    stop, errors, counts = threading.Event(), [], {"produced": 90, "compactions": 0}

    def producing():
        try:
            while not stop.is_set():
                produce(brokers, topic, orders(15, start=counts["produced"]))
                counts["produced"] += 15
                time.sleep(0.05)
        except Exception as e:  # reported below
            errors.append(f"producer: {e!r}")

    def compacting():
        while not stop.is_set():
            run = compactor(brokers, table["lake"], table["config"], "--tier-after", "0s",
                            "--max-records-per-commit", "25")
            if run.returncode != 0:
                errors.append(f"compactor: {run.stderr}")
                return
            counts["compactions"] += 1

    threads = [threading.Thread(target=f, daemon=True) for f in (producing, compacting)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        token = take(gateway, name)
        first = None
        rounds = 0
        deadline = time.monotonic() + 60
        while rounds < 3 or counts["compactions"] < 2:
            assert time.monotonic() < deadline, f"{rounds} rounds, {counts} in 60 s"
            assert not errors, errors
            with connect(gateway, token) as conn, conn.cursor() as cur:  # statements of one connection
                cur.execute(FULL.format(t=name))
                full = cur.fetch_arrow_table().to_pylist()
                cur.execute(BY_PARTITION.format(t=name))
                by_partition = cur.fetch_arrow_table().to_pylist()
                cur.execute(TOTALS.format(t=name))
                totals = cur.fetch_arrow_table().to_pylist()
            # The three answers describe one state.
            assert totals[0]["n"] == totals[0]["distinct_rows"] == len(full), (totals, len(full))
            assert totals[0]["total"] == sum(r["amount"] or 0 for r in full)
            for agg in by_partition:
                mine = [r for r in full if r["_partition"] == agg["_partition"]]
                offsets = [r["_offset"] for r in mine]
                assert agg["n"] == len(mine) and agg["low"] == min(offsets) and agg["high"] == max(offsets), agg
                assert offsets == list(range(min(offsets), max(offsets) + 1)), "no gap in the snapshot"
                assert agg["total"] == sum(r["amount"] or 0 for r in mine), agg
            # And the same state every round.
            if first is None:
                first = full
                assert len(full) >= 90
            else:
                assert_same_rows(full, first, f"round {rounds}")
            rounds += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join(DEADLINE_S * 4)
        try:
            moved = rows(gateway, f"SELECT count(*) AS n FROM {name}")[0]["n"]
        finally:
            gateway.stop()
    assert not errors, errors
    assert moved > len(first), "records arrived while the token was replayed"
    assert DeltaTable(str(table["path"])).version() > version, "the compactor committed meanwhile"


# ---------------------------------------------------------------------------------------------
# Failures


def test_records_of_the_token_deleted_before_they_were_tiered_are_data_loss(brokers, table):
    topic, name = table["topic"], table["name"]
    produce(brokers, topic, orders(30))
    tier(brokers, table)  # watermarks 10
    produce(brokers, topic, orders(30, start=30))  # offsets 10..20, in Kafka only
    gateway = lake_gateway(brokers, table)
    try:
        token = take(gateway, name)
        delete_records(brokers, topic, 1, 15)  # offsets 10..15 of partition 1: in no tier any more
        text = refused("DataLoss", rows, gateway, f"SELECT count(*) FROM {name}", token)
        assert name in text and "partition 1: offsets 10..15" in text, text
        text = refused("DataLoss", rows, gateway, FULL.format(t=name), token)
        assert name in text and "partition 1: offsets 10..15" in text, text
    finally:
        gateway.stop()

    # A topic with no lake tier: the token's records deleted from Kafka are gone everywhere.
    topic = raw_topic(brokers, partitions=2)
    produce(brokers, topic, values(0, 10) + values(1, 10))
    gateway = Gateway(brokers)
    try:
        token = take(gateway, topic)
        delete_records(brokers, topic, 0, 4)
        sql = f"SELECT count(*) AS n FROM {topic}"
        assert rows(gateway, sql) == [{"n": 16}], "without the token, a query reads what is there now"
        text = refused("DataLoss", rows, gateway, sql, token)
        assert topic in text and "partition 0: offsets 0..4" in text, text
        # Through pyarrow.flight too.
        text = refused("DataLoss", flight, gateway, sql, token)
        assert topic in text and "partition 0" in text, text
    finally:
        gateway.stop()


def test_a_token_of_named_partitions_replays_them_and_refuses_the_others(brokers, table):
    """A query answered from the lake alone names its partitions and never asks Kafka for the
    others: its token holds only those. Replaying it for the whole table would read nothing from
    the others, an answer that looks complete: refused, naming what to do instead."""
    topic, name = table["topic"], table["name"]
    produce(brokers, topic, orders(60))
    tier(brokers, table)
    produce(brokers, topic, orders(30, start=60))
    gateway = lake_gateway(brokers, table)
    try:
        named = f"SELECT count(*) AS n FROM {name} WHERE _partition = 0 AND _offset < 10"
        info, answer = flight(gateway, named)
        token = token_of(info)
        assert answer.to_pylist() == [{"n": 10}]
        produce(brokers, topic, orders(30, start=90))
        assert rows(gateway, named, token) == [{"n": 10}], "the partition it named replays"
        text = refused("InvalidArgument", rows, gateway, f"SELECT count(*) FROM {name}", token)
        assert "only partition(s) 0" in text and f"snapshot('{name}')" in text, text
        text = refused("InvalidArgument", rows, gateway, f"SELECT count(*) FROM {name} WHERE _partition = 2", token)
        assert "partition(s) 2" in text, text
    finally:
        gateway.stop()


def test_a_token_whose_lake_table_was_deleted_says_so(brokers, table):
    topic, name = table["topic"], table["name"]
    produce(brokers, topic, orders(30))
    tier(brokers, table)
    gateway = lake_gateway(brokers, table)
    try:
        token = take(gateway, name)
        subprocess.run(["rm", "-rf", str(table["path"])], check=True)
        text = refused("DataLoss", rows, gateway, f"SELECT count(*) FROM {name}", token)
        assert "was deleted" in text and "Kafka deleted" not in text, text
    finally:
        gateway.stop()


def test_damaged_forged_and_foreign_tokens_are_invalid_argument(brokers):
    kept, gone, recreated = raw_topic(brokers), raw_topic(brokers), raw_topic(brokers, partitions=2)
    produce(brokers, kept, values(0, 5))
    produce(brokers, gone, values(0, 5))
    produce(brokers, recreated, values(0, 10) + values(1, 10))
    gateway = Gateway(brokers, None, ["--topic-refresh", "1s"])
    try:
        token = take(gateway, kept)
        sql = f"SELECT count(*) AS n FROM {kept}"
        assert rows(gateway, sql, token) == [{"n": 5}]

        middle = len(token) // 2
        flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1:]
        for bad, why in [
            (flipped, "one character changed"),
            (token[:-3], "cut short"),
            (token + "AAAA", "bytes added"),
            ("ks1.abc", "garbage"),
            ("ks1.", "empty"),
            ("ks2." + token[4:], "another format"),
            (token[4:], "no prefix"),
            ("hello", "not a token"),
        ]:
            text = refused("InvalidArgument", rows, gateway, sql, bad)
            assert "token" in text.lower(), f"{why}: {text}"
        refused("InvalidArgument", flight, gateway, sql, flipped)
        # tail() takes the token as its start, and checks it the same way.
        for bad in (flipped, "ks1.abc"):
            refused("InvalidArgument", plan, gateway, f"SELECT _offset FROM tail('{kept}', '{bad}')")

        # A token naming a table that no longer exists.
        both = take(gateway, kept, gone)
        delete_topic(brokers, gone)
        listed = f"SELECT count(*) AS n FROM information_schema.tables WHERE table_name = '{gone}'"
        deadline = time.monotonic() + DEADLINE_S
        while rows(gateway, listed) != [{"n": 0}]:  # until the gateway's table list has lost it
            assert time.monotonic() < deadline, f"the gateway still lists {gone} after it was deleted"
            time.sleep(0.2)
        text = refused("InvalidArgument", rows, gateway, sql, both)
        assert gone in text, text

        # A token of a topic since deleted and created again with fewer records: its ends lie
        # beyond the partitions' ends now.
        old = take(gateway, recreated)
        delete_topic(brokers, recreated)
        create_topic(brokers, recreated, partitions=2)
        produce(brokers, recreated, values(0, 3) + values(1, 3))
        again = f"SELECT count(*) AS n FROM {recreated}"
        deadline = time.monotonic() + DEADLINE_S
        while rows(gateway, again) != [{"n": 6}]:  # the gateway sees the new topic
            assert time.monotonic() < deadline, rows(gateway, again)
            time.sleep(0.2)
        text = refused("InvalidArgument", rows, gateway, again, old)
        assert recreated in text and "partition" in text, text
    finally:
        gateway.stop()


def test_a_token_grants_nothing(secured):
    """Replaying a token is a query like any other: every table it names is checked against the
    caller's grants (the shared `secured` gateway: nothing is produced to its topics here)."""
    orders_name, secrets = secured["orders"], secured["secrets"]

    def as_user(user, password, sql, token=None):
        options = {TLS_ROOT: secured["ca"], "username": user, "password": password}
        if token:
            options[ADBC_HEADER] = token
        with flightsql.connect(secured["uri"], db_kwargs=options, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table().to_pylist()

    both = as_user("admin", "root-pw", f"SELECT token FROM snapshot('{orders_name}', '{secrets}')")[0]["token"]
    assert TOKEN_TEXT.match(both), both
    mine = as_user("analyst", "s3cret", f"SELECT token FROM snapshot('{orders_name}')")[0]["token"]
    assert as_user("analyst", "s3cret", f"SELECT count(*) AS n FROM {orders_name}", mine) == [{"n": 5}]
    for sql, token in [
        (f"SELECT token FROM snapshot('{secrets}')", None),
        (f"SELECT count(*) FROM {secrets}", both),
        (f"SELECT count(*) FROM {orders_name}", both),  # the token names a table they may not read
    ]:
        text = refused("PermissionDenied", as_user, "analyst", "s3cret", sql, token)
        assert secrets in text, text


# ---------------------------------------------------------------------------------------------
# tail from a token; tokens over several tables; the query log


def test_tail_from_a_token_continues_the_batch_answer_with_no_gap_and_no_duplicate(brokers, table):
    topic, name = table["topic"], table["name"]
    produce(brokers, topic, orders(60))
    tier(brokers, table)  # watermarks 20
    produce(brokers, topic, orders(30, start=60))  # offsets 20..30, in Kafka only
    gateway = lake_gateway(brokers, table)
    stream = None
    try:
        token = take(gateway, name)
        batch = rows(gateway, f"SELECT _partition, _offset, id FROM {name}", token)
        assert len(batch) == 90
        ends = {p: 1 + max(o for q, o in keys(batch) if q == p) for p in range(PARTITIONS)}
        before = produce_acked(brokers, topic, orders(30, start=90))  # before the stream starts: in it
        stream = Stream(gateway, f"SELECT _partition, _offset, id FROM tail('{name}', '{token}')")
        after = produce_acked(brokers, topic, orders(15, start=120))
        streamed = stream.read(45)
        streamed += stream.drain(0.5)
        firsts = {}
        for p, o in keys(streamed):
            firsts.setdefault(p, o)
        assert firsts == ends, f"the stream starts at the token's ends {ends}, got {firsts}"
        together = keys(batch) + keys(streamed)
        assert len(together) == len(set(together)), "a record in both the batch answer and the stream"
        everything = keys(rows(gateway, f"SELECT _partition, _offset FROM {name}"))
        assert sorted(together) == sorted(everything), "batch + stream is the whole table"
        assert set(keys(streamed)) == set(before) | set(after)
    finally:
        if stream is not None:
            stream.close()
        gateway.stop()


def test_a_token_of_a_join_covers_both_tables(brokers):
    made, config = json_tables(brokers, "orders", "payments")
    (orders_name, orders_topic), (payments_name, payments_topic) = made["orders"], made["payments"]

    def payments(count, start=0):
        return [{"partition": i % 3, "key": f"k{i}".encode(),
                 "value": json.dumps({"id": i, "paid": i % 2 == 0}).encode()} for i in range(start, start + count)]

    produce(brokers, orders_topic, orders(30))
    produce(brokers, payments_topic, payments(24))
    gateway = Gateway(brokers, config)
    try:
        join = (f"SELECT o.id, o.amount, p.paid, o._partition, o._offset, p._offset AS paid_offset "
                f"FROM {orders_name} o JOIN {payments_name} p ON o.id = p.id ORDER BY o.id")
        counts = (f"SELECT (SELECT count(*) FROM {orders_name}) AS orders, "
                  f"(SELECT count(*) FROM {payments_name}) AS payments")
        info, first = flight(gateway, join)
        token = token_of(info)
        before = first.to_pylist()
        assert len(before) == 23, before  # orders() poisons order 15: no id to join on
        both = take(gateway, orders_name, payments_name)

        produce(brokers, orders_topic, orders(15, start=30))
        produce(brokers, payments_topic, payments(21, start=24))
        assert rows(gateway, counts) == [{"orders": 45, "payments": 45}]
        for which, t in (("the join's FlightInfo token", token), ("snapshot() of both", both)):
            assert rows(gateway, join, t) == before, which
            assert rows(gateway, counts, t) == [{"orders": 30, "payments": 24}], which
            # Each table alone, under the token of both.
            assert rows(gateway, f"SELECT count(*) AS n FROM {payments_name}", t) == [{"n": 24}], which
        # A table the token does not name reads as it is now.
        only_orders = take(gateway, orders_name)
        produce(brokers, orders_topic, orders(3, start=45))
        assert rows(gateway, counts, only_orders) == [{"orders": 45, "payments": 45}]
    finally:
        gateway.stop()


def test_the_query_log_names_the_snapshot(brokers, tmp_path):
    topic = raw_topic(brokers)
    produce(brokers, topic, values(0, 5))
    log = tmp_path / "gateway.log"
    binary = os.environ["KAPPA_GATEWAY_BIN"]
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--brokers", brokers, "--log-format", "json"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=dict(os.environ, KAPPA_LOG="info"))
    gateway = Gateway.__new__(Gateway)
    gateway.process, gateway._config = process, None
    gateway.address = gateway._wait_for_address()
    try:
        sql = f"SELECT count(*) AS n FROM {topic}"
        info, _ = flight(gateway, sql)
        token = token_of(info)
        replayed = f"SELECT _offset FROM {topic}"
        flight(gateway, replayed, token)
    finally:
        gateway.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    done = {line["fields"].get("sql"): line["fields"] for line in lines
            if line.get("fields", {}).get("message") == "query done"}
    assert sql in done and replayed in done, log.read_text()
    assert done[sql].get("snapshot") == token, done[sql]
    assert done[replayed].get("snapshot", "").startswith("ks1."), done[replayed]
