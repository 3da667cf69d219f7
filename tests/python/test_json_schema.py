"""JSON Schema topics: values produced by confluent-kafka's own JSONSerializer through a schema registry (JSON
in the Confluent wire format), read through the real gateway as typed tables with no definition, defined by SQL
with the version pinned, and tiered by the compactor. The registry is tests/registry/test_registry.py, a test
double of the Confluent REST API."""

import datetime
import json

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from deltalake import DeltaTable

from conftest import Gateway, create_topic, produce, query, unique
from test_compactor import compactor


PROPERTIES = {
    "id": {"type": "integer"},
    "customer": {"type": ["null", "string"]},
    "amount": {"type": "number"},
    "placed_at": {"type": "string", "format": "date-time"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"oneOf": [{"type": "null"}, {"$ref": "#/definitions/Address"}]},
}
ADDRESS = {"type": "object", "properties": {"city": {"type": "string"}}}


def schema(version):
    properties = dict(PROPERTIES)
    if version == 2:
        properties["channel"] = {"type": "string"}
    return json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
                       "definitions": {"Address": ADDRESS}, "properties": properties, "required": ["id"]})


BASE = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.timezone.utc)


def order(i, version):
    value = {"id": i, "customer": None if i % 3 == 0 else f"c{i}", "amount": i * 1.25,
             "placed_at": (BASE + datetime.timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
             "tags": [f"t{j}" for j in range(i % 3)], "address": None if i % 2 else {"city": f"city{i}"}}
    if version == 2:
        value["channel"] = "app"
    return value


def expected(i):
    value = order(i, 1)
    value["placed_at"] = BASE + datetime.timedelta(seconds=i)
    return value


@pytest.fixture(scope="module")
def json_topic(brokers, registry):
    """v1 then v2 orders from JSONSerializer, with poison values in the middle of the partition."""
    topic = unique("json-schema-orders")
    create_topic(brokers, topic, partitions=1)
    client = SchemaRegistryClient({"url": registry})
    context = SerializationContext(topic, MessageField.VALUE)
    v1, v2 = JSONSerializer(schema(1), client), JSONSerializer(schema(2), client)
    values = [v1(order(i, 1), context) for i in range(10)]
    good = v2(order(10, 2), context)
    values += [
        b"{\"id\": 1}",                                  # not framed: plain JSON
        b"\x00\x00\x00\x03\xe7" + good[5:],               # schema id 999: not in the registry
        good[:-3],                                      # truncated body
    ]
    values += [v2(order(i, 2), context) for i in range(10, 20)]
    produce(brokers, topic, [{"partition": 0, "value": v} for v in values])
    assert len(client.get_versions(f"{topic}-value")) == 2
    return {"topic": topic, "values": values}


def check_rows(rows, values, with_channel):
    good = [r for r in rows if r["_error"] is None]
    bad = [r for r in rows if r["_error"] is not None]
    assert [r["id"] for r in good] == list(range(20)), [r["_error"] for r in bad]
    for row in good:
        want = expected(row["id"])
        assert {k: row[k] for k in want} == want, (row["id"], row)
        if with_channel:
            assert row["channel"] == (None if row["id"] < 10 else "app"), row
        assert row["_value"] is None
    errors = [r["_error"] for r in bad]
    assert "not in the Confluent wire format" in errors[0], errors
    assert "schema id 999 is not in the schema registry" in errors[1], errors
    assert bad[2]["_value"] == values[12], "the whole value is kept, header included"
    return bad


def test_a_json_schema_topic_is_a_typed_table_with_no_definition(brokers, registry, json_topic):
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry])
    try:
        table = query(gateway, f'SELECT * FROM "{json_topic["topic"]}" ORDER BY _offset')
        types = {f.name: str(f.type) for f in table.schema if not f.name.startswith("_")}
        assert types == {"address": "struct<city: string>", "amount": "double", "channel": "string",
                         "customer": "string", "id": "int64", "placed_at": "timestamp[us, tz=UTC]",
                         "tags": "list<item: string>"}, types
        assert list(types) == [*PROPERTIES, "channel"], "columns in the order the schema lists its properties"
        check_rows(table.to_pylist(), json_topic["values"], with_channel=True)
    finally:
        gateway.stop()


def test_a_json_schema_table_defined_by_sql_keeps_its_version(brokers, registry, json_topic, tmp_path):
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry, "--lake", str(tmp_path / "lake")])
    try:
        query(gateway, f"CREATE EXTERNAL TABLE orders_v1 STORED AS KAFKA LOCATION '{json_topic['topic']}' "
                       "OPTIONS ('value.format' 'json-schema', 'value.schema.version' '1')")
        table = query(gateway, "SELECT * FROM orders_v1 ORDER BY _offset")
        assert "channel" not in table.schema.names, table.schema.names
        check_rows(table.to_pylist(), json_topic["values"], with_channel=False)
        shown = query(gateway, "SHOW CREATE TABLE orders_v1").to_pylist()[0]["definition"]
        assert "'value.format' 'json-schema'" in shown and "'value.schema.version' '1'" in shown, shown
    finally:
        gateway.stop()


def test_the_compactor_tiers_a_json_schema_topic(brokers, registry, json_topic, tmp_path):
    topic = json_topic["topic"]
    lake = tmp_path / "lake"
    config = tmp_path / "kappa.toml"
    config.write_text("")
    run = compactor(brokers, lake, config, "--table", topic, "--tier-after", "0s", "--schema-registry", registry)
    assert run.returncode == 0, run.stderr
    tier = DeltaTable(str(lake / "tables" / topic)).to_pyarrow_table()
    assert str(tier.schema.field("placed_at").type) == "timestamp[us, tz=UTC]", tier.schema
    rows = sorted(tier.to_pylist(), key=lambda r: r["_offset"])
    check_rows(rows, json_topic["values"], with_channel=True)
