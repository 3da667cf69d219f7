"""Avro topics as typed tables: values produced by confluent-kafka's own AvroSerializer through a
schema registry (the Confluent wire format) and by fastavro (plain datums), read through the real
gateway with no definition, with a TOML definition pinned to a subject version, and tiered by the
compactor. The registry is tests/registry/test_registry.py, a test double of the Confluent REST API."""

import datetime
import decimal
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import adbc_driver_flightsql.dbapi as flightsql
import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from deltalake import DeltaTable

from conftest import Gateway, closed_port, create_topic, produce, query, unique
from test_compactor import compactor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "registry"))
import test_registry  # noqa: E402 (the registry test double)

ADDRESS = {
    "type": "record", "name": "Address",
    "fields": [{"name": "city", "type": "string"}, {"name": "zip", "type": ["null", "string"], "default": None}],
}
V1_FIELDS = [
    {"name": "id", "type": "long"},
    {"name": "customer", "type": ["null", "string"], "default": None},
    {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
    {"name": "placed_on", "type": {"type": "int", "logicalType": "date"}},
    {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "seen_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "local_at", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
    {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "at_time", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "attrs", "type": {"type": "map", "values": "long"}},
    {"name": "address", "type": ["null", ADDRESS], "default": None},
    {"name": "legacy", "type": "string", "default": ""},
]
# v2 drops `legacy` and adds `channel` with a default: a BACKWARD-compatible change.
V2_FIELDS = [f for f in V1_FIELDS if f["name"] != "legacy"] + [
    {"name": "channel", "type": "string", "default": "web"}]
V1 = {"type": "record", "name": "Order", "namespace": "shop", "fields": V1_FIELDS}
V2 = {"type": "record", "name": "Order", "namespace": "shop", "fields": V2_FIELDS}
BASE = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.timezone.utc)


def order(i, version):
    value = {
        "id": i,
        "customer": None if i % 4 == 0 else f"c{i % 5}",
        "amount": decimal.Decimal(f"{i}.{i % 100:02d}"),
        "placed_on": datetime.date(2026, 1, 1) + datetime.timedelta(days=i),
        "placed_at": BASE + datetime.timedelta(seconds=i),
        "seen_at": BASE + datetime.timedelta(microseconds=i * 7),
        "local_at": datetime.datetime(2026, 5, 1, 8, 30) + datetime.timedelta(minutes=i),
        "ref": str(uuid.UUID(int=i + 1)),
        "at_time": datetime.time(9, 15, i % 60),
        "status": ["NEW", "PAID", "SHIPPED"][i % 3],
        "tags": [f"t{j}" for j in range(i % 3)],
        "attrs": {"n": i, "double": 2 * i},
        "address": None if i % 2 else {"city": f"city{i}", "zip": None if i % 3 else f"{10000 + i}"},
    }
    if version == 1:
        value["legacy"] = f"old{i}"
    else:
        value["channel"] = "app" if i % 2 else "store"
    return value


def expected(i, version, reader_version):
    """The row a value of `version` reads as under `reader_version`'s schema."""
    source = order(i, version)
    row = {k: v for k, v in source.items() if k not in ("legacy", "channel")}
    row["ref"] = source["ref"]
    row["at_time"] = (9 * 3600 + 15 * 60 + i % 60) * 1_000_000  # microseconds since midnight
    row["seen_at"] = BASE + datetime.timedelta(microseconds=i * 7)
    row["attrs"] = [("n", i), ("double", 2 * i)]
    if reader_version == 1:
        row["legacy"] = source.get("legacy", "")  # v2 values take the reader's default
    else:
        row["channel"] = source.get("channel", "web")  # v1 values take the reader's default
    return row


@pytest.fixture(scope="module")
def avro_topic(brokers, registry):
    """A topic of v1 then v2 values from AvroSerializer, with poison values in the middle."""
    topic = unique("avro-orders")
    create_topic(brokers, topic, partitions=1)
    client = SchemaRegistryClient({"url": registry})
    context = SerializationContext(topic, MessageField.VALUE)
    v1 = AvroSerializer(client, json.dumps(V1))
    v2 = AvroSerializer(client, json.dumps(V2))
    values = [v1(order(i, 1), context) for i in range(20)]
    good = v2(order(20, 2), context)
    values += [
        b"\x01not framed",                                  # wrong magic byte
        b"\x00\x00\x00\x03\xe7" + good[5:],                   # schema id 999: not in the registry
        good[:-3],                                          # truncated body
    ]
    values += [v2(order(i, 2), context) for i in range(20, 40)]
    produce(brokers, topic, [{"partition": 0, "key": b"k%d" % n, "value": v} for n, v in enumerate(values)])
    versions = client.get_versions(f"{topic}-value")
    assert len(versions) == 2, versions
    return {"topic": topic, "values": values}


def check_rows(rows, reader_version):
    good = [r for r in rows if r["_error"] is None]
    bad = [r for r in rows if r["_error"] is not None]
    assert len(rows) == 43 and len(good) == 40, [r["_error"] for r in bad]
    for row in good:
        i = row["id"]
        version = 1 if i < 20 else 2
        want = expected(i, version, reader_version)
        got = {k: row[k] for k in want}
        assert got == want, (i, got, want)
        assert row["_value"] is None, "decoded values keep no bytes"
    return bad


def test_a_registry_topic_is_a_typed_table_with_no_definition(brokers, registry, avro_topic):
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry])
    try:
        table = query(gateway, f'SELECT * FROM "{avro_topic["topic"]}" ORDER BY _offset')
        types = {f.name: str(f.type) for f in table.schema}
        assert types["amount"] == "decimal128(10, 2)" and types["placed_on"] == "date32[day]", types
        assert types["placed_at"] == "timestamp[us, tz=UTC]" and types["local_at"] == "timestamp[us]", types
        assert types["ref"] == "string" and types["status"] == "string" and types["at_time"] == "int64", types
        assert types["tags"] == "list<item: string not null>", types
        assert types["address"] == "struct<city: string not null, zip: string>", types
        assert "legacy" not in types and types["channel"] == "string", "the latest version's columns"
        bad = check_rows(table.to_pylist(), reader_version=2)
        errors = [r["_error"] for r in bad]
        assert "first byte is 0x01" in errors[0], errors
        assert "schema id 999 is not in the schema registry" in errors[1], errors
        assert "invalid Avro" in errors[2], errors
        assert [r["_value"] for r in bad] == avro_topic["values"][20:23], "bad values keep their bytes"
        assert all(r["id"] is None for r in bad), "a bad value is a row of nulls"

        # Only the columns asked for, and filters on decoded columns.
        rows = query(gateway, f'SELECT id, address[\'city\'] AS city FROM "{avro_topic["topic"]}" '
                              f"WHERE status = 'PAID' AND id < 10 ORDER BY id").to_pylist()
        assert rows == [{"id": i, "city": None if i % 2 else f"city{i}"} for i in (1, 4, 7)], rows
    finally:
        gateway.stop()


def test_a_definition_pins_a_subject_version(brokers, registry, avro_topic, tmp_path):
    topic = avro_topic["topic"]
    config = (f'[[tables]]\nname = "orders_v1"\ntopic = "{topic}"\nformat = "avro-confluent"\n'
              f"schema_version = 1\n")
    gateway = Gateway(brokers, config, extra_args=["--schema-registry", registry])
    try:
        table = query(gateway, "SELECT * FROM orders_v1 ORDER BY _offset")
        assert "legacy" in table.schema.names and "channel" not in table.schema.names
        check_rows(table.to_pylist(), reader_version=1)
    finally:
        gateway.stop()


def test_plain_avro_with_an_inline_schema(brokers):
    topic = unique("plain-avro")
    create_topic(brokers, topic, partitions=1)
    schema = {"type": "record", "name": "Reading", "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "celsius", "type": ["null", "double"], "default": None},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}}]}
    parsed = fastavro.parse_schema(schema)

    def datum(record):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, record)
        return out.getvalue()

    readings = [{"sensor": f"s{i}", "celsius": None if i == 3 else i / 2, "at": BASE + datetime.timedelta(seconds=i)}
                for i in range(6)]
    values = [datum(r) for r in readings]
    values.insert(2, b"\x02")  # a string length and no string
    produce(brokers, topic, [{"partition": 0, "value": v} for v in values])
    config = (f'[[tables]]\nname = "readings"\ntopic = "{topic}"\nformat = "avro"\n'
              f"schema = '''{json.dumps(schema)}'''\n")
    gateway = Gateway(brokers, config)
    try:
        rows = query(gateway, "SELECT sensor, celsius, at, _error, _value FROM readings ORDER BY _offset").to_pylist()
        assert [(r["sensor"], r["celsius"], r["at"]) for r in rows if r["_error"] is None] == \
            [(r["sensor"], r["celsius"], r["at"]) for r in readings]
        assert rows[2]["sensor"] is None and "invalid Avro" in rows[2]["_error"] and rows[2]["_value"] == b"\x02"
    finally:
        gateway.stop()


def test_a_registry_that_is_down_fails_the_query_and_names_it(brokers, avro_topic):
    url = f"http://127.0.0.1:{closed_port()}"
    gateway = Gateway(brokers, extra_args=["--schema-registry", url, "--schema-registry-timeout", "2s"])
    try:
        started = time.monotonic()
        with pytest.raises((flightsql.Error, OSError)) as failed:
            query(gateway, f'SELECT * FROM "{avro_topic["topic"]}"')
        assert time.monotonic() - started < 15
        message = str(failed.value)
        assert "(Unavailable;" in message and url in message, message
    finally:
        gateway.stop()


def test_the_compactor_tiers_an_avro_topic_into_typed_delta_columns(brokers, registry, avro_topic, tmp_path):
    topic = avro_topic["topic"]
    lake = tmp_path / "lake"
    config = tmp_path / "kappa.toml"
    config.write_text("")
    run = compactor(brokers, lake, config, "--table", topic, "--tier-after", "0s", "--schema-registry", registry)
    assert run.returncode == 0, run.stderr
    dt = DeltaTable(str(lake / "tables" / topic))
    lake_rows = sorted(dt.to_pyarrow_table().to_pylist(), key=lambda r: r["_offset"])
    lake_types = {f.name: str(f.type) for f in dt.to_pyarrow_table().schema}
    assert lake_types["amount"] == "decimal128(10, 2)" and lake_types["placed_at"] == "timestamp[us, tz=UTC]", lake_types
    check_rows(lake_rows, reader_version=2)

    gateway = Gateway(brokers, extra_args=["--schema-registry", registry, "--lake", str(lake)])
    try:
        plan = query(gateway, f'EXPLAIN SELECT * FROM "{topic}"').to_pylist()
        assert "LakeTierExec" in str(plan), plan
        rows = query(gateway, f'SELECT * FROM "{topic}" ORDER BY _offset').to_pylist()
        assert [r["id"] for r in rows] == [r["id"] for r in lake_rows], "the union reads the lake tier"
        check_rows(rows, reader_version=2)
    finally:
        gateway.stop()


def test_tail_streams_a_registry_topic_with_the_same_columns(brokers, registry, avro_topic):
    from test_tail import Stream

    gateway = Gateway(brokers, extra_args=["--schema-registry", registry])
    stream = None
    try:
        stream = Stream(gateway, f"SELECT * FROM tail('{avro_topic['topic']}', 'earliest')")
        assert "amount" in stream.schema.names and "channel" in stream.schema.names
        check_rows(stream.read(43), reader_version=2)
    finally:
        if stream:
            stream.close()
        gateway.stop()


def test_nested_json_columns_read_the_same_from_kafka_and_the_lake(brokers, tmp_path):
    topic = unique("nested-json")
    create_topic(brokers, topic, partitions=1)
    values = [json.dumps({
        "id": i, "address": None if i == 2 else {"city": f"c{i}", "zip": None},
        "tags": [f"t{j}" for j in range(i)], "price": f"{i}.25", "day": f"2026-12-0{i + 1}",
        "attrs": {"n": i}, "at": f"2026-12-06T10:00:0{i}.5Z"}).encode() for i in range(4)]
    values.insert(1, b'{"id": "not a number"}')
    produce(brokers, topic, [{"partition": 0, "value": v} for v in values])
    config = tmp_path / "kappa.toml"
    config.write_text(
        f'[[tables]]\nname = "nested"\ntopic = "{topic}"\nformat = "json"\n'
        'columns = "id BIGINT, address STRUCT<city VARCHAR, zip VARCHAR>, tags ARRAY<VARCHAR>, '
        'price DECIMAL(10, 2), day DATE, attrs MAP<VARCHAR, BIGINT>, at TIMESTAMP"\n')
    want = [{"id": i, "address": None if i == 2 else {"city": f"c{i}", "zip": None},
             "tags": [f"t{j}" for j in range(i)], "price": decimal.Decimal(f"{i}.25"),
             "day": datetime.date(2026, 12, i + 1), "attrs": [("n", i)],
             "at": datetime.datetime(2026, 12, 6, 10, 0, i, 500000)} for i in range(4)]
    columns = "id, address, tags, price, day, attrs, at"
    gateway = Gateway(brokers, config.read_text())
    try:
        rows = query(gateway, f"SELECT {columns}, _error FROM nested ORDER BY _offset").to_pylist()
        assert "not a number" in rows[1]["_error"]
        assert [{k: v for k, v in r.items() if k != "_error"} for r in rows if r["_error"] is None] == want
    finally:
        gateway.stop()
    lake = tmp_path / "lake"
    run = compactor(brokers, lake, config, "--tier-after", "0s")
    assert run.returncode == 0, run.stderr
    tiered = DeltaTable(str(lake / "tables" / "nested")).to_pyarrow_table().to_pylist()
    tiered = sorted((r for r in tiered if r["_error"] is None), key=lambda r: r["id"])
    assert [{k: r[k] for k in want[0]} for r in tiered] == want


def test_registry_credentials_and_a_registry_that_never_answers(brokers, avro_topic):
    topic = avro_topic["topic"]
    server, url = test_registry.serve(credentials="kappa:s3cret")
    client = SchemaRegistryClient({"url": url, "basic.auth.user.info": "kappa:s3cret"})
    from confluent_kafka.schema_registry import Schema

    client.register_schema(f"{topic}-value", Schema(json.dumps(V1), "AVRO"))
    client.register_schema(f"{topic}-value", Schema(json.dumps(V2), "AVRO"))
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    env_password = dict(os.environ, KAPPA_SCHEMA_REGISTRY_PASSWORD="s3cret")
    right = Gateway(brokers, extra_args=["--schema-registry", url, "--schema-registry-user", "kappa"],
                    env=env_password)
    wrong = Gateway(brokers, extra_args=["--schema-registry", url.replace("//", "//kappa:nope@")])
    slow = Gateway(brokers, extra_args=["--schema-registry", silent_url, "--schema-registry-timeout", "1s"])
    try:
        # The ids in the topic's frames are the other registry's; these are the same schemas, so
        # the registries agree on ids 1 and 2 (both numbered them in the same order).
        rows = query(right, f'SELECT id, channel, _error FROM "{topic}" ORDER BY _offset').to_pylist()
        assert sum(r["_error"] is None for r in rows) == 40 and rows[0]["channel"] == "web"
        for gateway, words in ((wrong, "401"), (slow, "timed out")):
            started = time.monotonic()
            with pytest.raises((flightsql.Error, OSError)) as failed:
                query(gateway, f'SELECT * FROM "{topic}"')
            assert time.monotonic() - started < 10, "bounded by the registry timeout"
            message = str(failed.value)
            assert "(Unavailable;" in message and words in message, message
            assert "nope" not in message, "credentials never reach an error message"
    finally:
        for gateway in (right, wrong, slow):
            gateway.stop()
        silent.close()
        server.shutdown()


@pytest.mark.parametrize("key_schema,key_of,want_key", [
    ('"string"', lambda i: f"customer-{i}", lambda i: f"customer-{i}"),
    (json.dumps({"type": "record", "name": "OrderKey", "namespace": "shop", "fields": [
        {"name": "region", "type": "string"}, {"name": "n", "type": "long"}]}),
     lambda i: {"region": f"r{i % 2}", "n": i}, lambda i: {"region": f"r{i % 2}", "n": i}),
])
def test_a_key_subject_decodes_keys_into_the_key_column(brokers, registry, key_schema, key_of, want_key):
    topic = unique("avro-keys")
    create_topic(brokers, topic, partitions=1)
    client = SchemaRegistryClient({"url": registry})
    keys = AvroSerializer(client, key_schema)
    values = AvroSerializer(client, json.dumps(V2))
    key_context = SerializationContext(topic, MessageField.KEY)
    value_context = SerializationContext(topic, MessageField.VALUE)
    records = [{"partition": 0, "key": keys(key_of(i), key_context), "value": values(order(i, 2), value_context)}
               for i in range(5)]
    records.insert(2, {"partition": 0, "key": b"\x07bad key", "value": values(order(9, 2), value_context)})
    records.append({"partition": 0, "key": None, "value": values(order(5, 2), value_context)})
    produce(brokers, topic, records)
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry])
    try:
        table = query(gateway, f'SELECT key, _key, id, _error FROM "{topic}" ORDER BY _offset')
        assert table.schema.names[0] == "key"
        rows = table.to_pylist()
        assert [r["key"] for r in rows] == [want_key(0), want_key(1), None, want_key(2), want_key(3), want_key(4), None]
        assert [r["id"] for r in rows] == [0, 1, 9, 2, 3, 4, 5], "a bad key does not cost the value"
        assert rows[2]["_error"].startswith("key: ") and rows[2]["_key"] == b"\x07bad key"
        assert all(r["_error"] is None for i, r in enumerate(rows) if i != 2)
        assert rows[0]["_key"] == records[0]["key"], "_key keeps the raw bytes"
    finally:
        gateway.stop()


def test_a_table_defined_by_sql_keeps_the_registry_version_it_was_created_with(brokers, registry, tmp_path):
    """CREATE EXTERNAL TABLE with no column list takes the subject's latest version *then*, written into the
    stored definition: a version registered later does not change the table, and SHOW CREATE TABLE says which."""
    topic = unique("avro-ddl")
    create_topic(brokers, topic, partitions=1)
    client = SchemaRegistryClient({"url": registry})
    context = SerializationContext(topic, MessageField.VALUE)
    v1 = AvroSerializer(client, json.dumps(V1))
    produce(brokers, topic, [{"partition": 0, "value": v1(order(i, 1), context)} for i in range(3)])
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry, "--lake", str(tmp_path / "lake"),
                                           "--topic-refresh", "1s"])
    try:
        query(gateway, f"CREATE EXTERNAL TABLE orders_pinned STORED AS KAFKA LOCATION '{topic}' "
                       "OPTIONS ('value.format' 'avro-confluent')")
        v2 = AvroSerializer(client, json.dumps(V2))
        produce(brokers, topic, [{"partition": 0, "value": v2(order(i, 2), context)} for i in range(3, 6)])
        assert len(client.get_versions(f"{topic}-value")) == 2
        time.sleep(1.2)  # past the refresh interval: the topic itself now reads as v2
        assert "channel" in query(gateway, f'SELECT * FROM "{topic}"').schema.names
        table = query(gateway, "SELECT * FROM orders_pinned ORDER BY _offset")
        assert "legacy" in table.schema.names and "channel" not in table.schema.names, table.schema.names
        rows = table.to_pylist()
        assert [r["_error"] for r in rows] == [None] * 6, rows
        for row in rows:
            i = row["id"]
            want = expected(i, 1 if i < 3 else 2, reader_version=1)
            assert {k: row[k] for k in want} == want, (i, row)
        shown = query(gateway, "SHOW CREATE TABLE orders_pinned").to_pylist()[0]["definition"]
        assert "'value.format' 'avro-confluent'" in shown and "'value.schema.version' '1'" in shown, shown
    finally:
        gateway.stop()


def test_a_definition_decodes_keys_with_a_registry_key_format(brokers, registry, tmp_path):
    """JSON values with Avro keys registered under a subject of their own (not `<topic>-key`, so nothing
    finds them by itself): 'key.format' and 'key.subject' decode the keys into `key`, `_key` keeps the bytes,
    and a key that does not decode is `key: …` in `_error` while the value still decodes."""
    topic = unique("keyed-json")
    create_topic(brokers, topic, partitions=1)
    client = SchemaRegistryClient({"url": registry})
    key_schema = {"type": "record", "name": "CustomerKey", "fields": [{"name": "customer_id", "type": "long"},
                                                                       {"name": "region", "type": "string"}]}
    from confluent_kafka.schema_registry import Schema
    key_id = client.register_schema(f"{topic}-customer-keys", Schema(json.dumps(key_schema), "AVRO"))
    parsed = fastavro.parse_schema(key_schema)

    def key(i):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, parsed, {"customer_id": i, "region": f"r{i % 2}"})
        return b"\x00" + key_id.to_bytes(4, "big") + out.getvalue()

    records = [{"partition": 0, "key": key(i), "value": json.dumps({"id": i, "amount": i * 2}).encode()}
               for i in range(4)]
    records.append({"partition": 0, "key": b"\x07bad key", "value": json.dumps({"id": 4, "amount": 8}).encode()})
    produce(brokers, topic, records)
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry, "--lake", str(tmp_path / "lake")])
    try:
        query(gateway, f"CREATE EXTERNAL TABLE keyed_orders (id BIGINT, amount BIGINT) STORED AS KAFKA "
                       f"LOCATION '{topic}' OPTIONS ('value.format' 'json', 'key.format' 'avro-confluent', "
                       f"'key.subject' '{topic}-customer-keys')")
        rows = query(gateway, "SELECT key, id, amount, _key, _error FROM keyed_orders ORDER BY _offset").to_pylist()
        assert [r["key"] for r in rows[:4]] == [{"customer_id": i, "region": f"r{i % 2}"} for i in range(4)], rows
        assert [r["id"] for r in rows] == list(range(5)) and rows[4]["amount"] == 8, rows
        assert rows[0]["_key"] == key(0) and rows[0]["_error"] is None, rows[0]
        assert rows[4]["key"] is None and rows[4]["_error"].startswith("key: "), rows[4]
        shown = query(gateway, "SHOW CREATE TABLE keyed_orders").to_pylist()[0]["definition"]
        assert "'key.format' 'avro-confluent'" in shown and f"'key.subject' '{topic}-customer-keys'" in shown, shown
        assert "'key.schema.version' '1'" in shown, "the key subject's version is kept too"
        message = str(pytest.raises(flightsql.Error, query, gateway,
                                    f"CREATE EXTERNAL TABLE raw_keyed STORED AS KAFKA LOCATION '{topic}' "
                                    f"OPTIONS ('value.format' 'raw', 'key.format' 'avro-confluent', "
                                    f"'key.subject' '{topic}-customer-keys')").value)
        assert "other than raw" in message, message
    finally:
        gateway.stop()


def test_json_timestamps_follow_one_rule_in_kafka_and_the_lake(brokers, tmp_path):
    """A number in a TIMESTAMP column is milliseconds since the epoch unless the column declares its
    precision; a number outside 1900..2200 is an _error (not 1970); WITH TIME ZONE keeps UTC."""
    topic = unique("json-ts")
    create_topic(brokers, topic, partitions=1)
    at = datetime.datetime(2026, 12, 6, 10, 0, 0, 123000, tzinfo=datetime.timezone.utc)
    ms = int(at.timestamp() * 1000)
    good = [
        {"id": 0, "at": ms, "at_s": ms // 1000, "at_us": ms * 1000, "zoned": ms, "nested": {"when": ms}},
        {"id": 1, "at": "2026-12-06T10:00:00.123456Z", "at_s": "2026-12-06T10:00:00Z",
         "at_us": ms * 1000 + 456, "zoned": "2026-12-06T11:00:00.123+01:00", "nested": {"when": ms}},
    ]
    bad = [{"id": 2, "at": ms * 1000}, {"id": 3, "at_s": ms}]  # microseconds as ms, ms as seconds
    produce(brokers, topic, [{"partition": 0, "value": json.dumps(v).encode()} for v in good + bad])
    config = tmp_path / "kappa.toml"
    config.write_text(
        f'[[tables]]\nname = "events"\ntopic = "{topic}"\nformat = "json"\n'
        'columns = "id BIGINT, at TIMESTAMP, at_s TIMESTAMP(0), at_us TIMESTAMP(6), '
        'zoned TIMESTAMP WITH TIME ZONE, nested STRUCT<\\"when\\" TIMESTAMP>"\n')
    naive = at.replace(tzinfo=None)
    want = [
        {"id": 0, "at": naive, "at_s": naive.replace(microsecond=0), "at_us": naive, "zoned": at,
         "nested": {"when": naive}},
        {"id": 1, "at": naive.replace(microsecond=123456), "at_s": naive.replace(microsecond=0),
         "at_us": naive.replace(microsecond=123456), "zoned": at, "nested": {"when": naive}},
    ]
    columns = "id, at, at_s, at_us, zoned, nested"

    def check(gateway, where):
        table = query(gateway, f"SELECT {columns}, _error FROM events WHERE {where} ORDER BY _offset")
        assert str(table.schema.field("zoned").type) == "timestamp[us, tz=UTC]", table.schema
        rows = table.to_pylist()
        assert [{k: v for k, v in r.items() if k != "_error"} for r in rows[:2]] == want
        for row in rows[2:]:
            assert "outside 1900-01-01" in row["_error"] and row["at"] is None, row
        assert len(rows) == 4
        # AT TIME ZONE converts the instant (10:00:00.123 UTC is 11:00:00.123 in Paris).
        local = query(gateway, "SELECT CAST(zoned AT TIME ZONE 'Europe/Paris' AS VARCHAR) AS local "
                               f"FROM events WHERE id = 0 AND {where}").column("local").to_pylist()
        assert local == ["2026-12-06T11:00:00.123+01:00"], local

    gateway = Gateway(brokers, config.read_text())
    try:
        check(gateway, "true")
    finally:
        gateway.stop()
    lake = tmp_path / "lake"
    run = compactor(brokers, lake, config, "--tier-after", "0s")
    assert run.returncode == 0, run.stderr
    gateway = Gateway(brokers, config.read_text(), ["--lake", str(lake)])
    try:
        plan = "\n".join(query(gateway, "EXPLAIN SELECT * FROM events WHERE _offset < 4").column("plan").to_pylist())
        assert "LakeTierExec" in plan and "KafkaScanExec" not in plan, plan
        check(gateway, "_offset < 4")
    finally:
        gateway.stop()


def test_nanosecond_timestamps_are_refused_with_the_reason(brokers, tmp_path):
    config = tmp_path / "kappa.toml"
    config.write_text('[[tables]]\nname = "e"\ntopic = "e"\nformat = "json"\ncolumns = "at TIMESTAMP( 9 )"\n')
    run = subprocess.run([os.environ["KAPPA_GATEWAY_BIN"], "serve", "--listen", "127.0.0.1:0", "--brokers", brokers,
                          "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "TIMESTAMP(9)" in run.stderr and "microseconds" in run.stderr, run.stderr
