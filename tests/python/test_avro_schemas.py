"""Avro schemas beyond one flat document: unions of several types, and named types referenced from
other registry subjects (Confluent's schema references), written by confluent-kafka's AvroSerializer
and read through the gateway, from Kafka and from the lake after the compactor tiers them."""

import json
import os
import sys

import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from deltalake import DeltaTable

from conftest import Gateway, create_topic, produce, query, unique
from test_compactor import compactor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "registry"))
import test_registry  # noqa: E402,F401 (the registry test double, started by conftest's fixture)

COUNTRY = {"type": "enum", "name": "Country", "namespace": "common", "symbols": ["FR", "DE", "JP"]}
ADDRESS = {
    "type": "record", "name": "Address", "namespace": "common",
    "fields": [{"name": "city", "type": "string"}, {"name": "country", "type": "common.Country"}],
}
ORDER = {
    "type": "record", "name": "Order", "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        # Named types defined in other subjects: the first use, a later use in a union, a union branch.
        {"name": "billing", "type": "common.Address"},
        {"name": "shipping", "type": ["null", "common.Address"], "default": None},
        # Unions of several types: read as a struct of one nullable field per branch.
        {"name": "note", "type": ["null", "string", "long"], "default": None},
        {"name": "origin", "type": ["double", "common.Country"]},
        {"name": "history", "type": {"type": "array", "items": ["long", "boolean"]}},
    ],
}
COUNTRIES = ["FR", "DE", "JP"]


def order(i):
    return {
        "id": i,
        "billing": {"city": f"city{i}", "country": COUNTRIES[i % 3]},
        "shipping": None if i % 2 else {"city": f"ship{i}", "country": COUNTRIES[(i + 1) % 3]},
        "note": [None, f"note{i}", i * 100][i % 3],
        # fastavro picks the branch by the value's type; a tuple names it outright.
        "origin": ("common.Country", COUNTRIES[i % 3]) if i % 2 else float(i) + 0.5,
        "history": [i, i % 2 == 0],
    }


def expected(i):
    """The row order(i) reads as: each union a struct with the taken branch set."""
    source = order(i)
    note = source["note"]
    return {
        "id": i,
        "billing": source["billing"],
        "shipping": source["shipping"],
        "note": None if note is None else {
            "string": note if isinstance(note, str) else None,
            "long": note if isinstance(note, int) else None,
        },
        "origin": {"double": None, "Country": COUNTRIES[i % 3]} if i % 2 else {"double": float(i) + 0.5, "Country": None},
        "history": [{"long": i, "boolean": None}, {"long": None, "boolean": i % 2 == 0}],
    }


@pytest.fixture(scope="module")
def referencing_topic(brokers, registry):
    """Orders whose schema takes Address (which takes Country) from other subjects."""
    topic = unique("avro-refs")
    create_topic(brokers, topic, partitions=1)
    client = SchemaRegistryClient({"url": registry})
    client.register_schema("common.Country", Schema(json.dumps(COUNTRY), "AVRO"))
    client.register_schema("common.Address", Schema(json.dumps(ADDRESS), "AVRO", [
        SchemaReference("common.Country", "common.Country", 1)]))
    schema = Schema(json.dumps(ORDER), "AVRO", [SchemaReference("common.Address", "common.Address", 1),
                                                 SchemaReference("common.Country", "common.Country", 1)])
    serialize = AvroSerializer(client, schema)
    context = SerializationContext(topic, MessageField.VALUE)
    values = [serialize(order(i), context) for i in range(12)]
    produce(brokers, topic, [{"partition": 0, "value": v} for v in values])
    registered = client.get_latest_version(f"{topic}-value")
    assert [r.subject for r in registered.schema.references] == ["common.Address", "common.Country"]
    return topic


def check(rows):
    assert [r["_error"] for r in rows] == [None] * 12, [r["_error"] for r in rows]
    for row in rows:
        want = expected(row["id"])
        assert {k: row[k] for k in want} == want, (row, want)


def test_references_and_unions_read_as_typed_columns_from_kafka(brokers, registry, referencing_topic):
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry])
    try:
        table = query(gateway, f'SELECT * FROM "{referencing_topic}" ORDER BY _offset')
        types = {f.name: str(f.type) for f in table.schema}
        assert types["billing"] == "struct<city: string not null, country: string not null>", types
        assert types["note"] == "struct<string: string, long: int64>", types
        assert types["origin"] == "struct<double: double, Country: string>", types
        assert types["history"] == "list<item: struct<long: int64, boolean: bool> not null>", types
        check(table.to_pylist())

        rows = query(gateway, f"SELECT id, note['long'] AS n, origin['Country'] AS c FROM \"{referencing_topic}\" "
                              f"WHERE note['long'] IS NOT NULL ORDER BY id").to_pylist()
        assert rows == [{"id": i, "n": i * 100, "c": COUNTRIES[i % 3] if i % 2 else None} for i in (2, 5, 8, 11)], rows
    finally:
        gateway.stop()


def test_the_compactor_tiers_references_and_unions_into_the_same_columns(brokers, registry, referencing_topic,
                                                                        tmp_path):
    lake = tmp_path / "lake"
    config = tmp_path / "kappa.toml"
    config.write_text("")
    run = compactor(brokers, lake, config, "--table", referencing_topic, "--tier-after", "0s",
                    "--schema-registry", registry)
    assert run.returncode == 0, run.stderr
    lake_rows = DeltaTable(str(lake / "tables" / referencing_topic)).to_pyarrow_table().to_pylist()
    assert len(lake_rows) == 12
    check(lake_rows)

    gateway = Gateway(brokers, extra_args=["--schema-registry", registry, "--lake", str(lake)])
    try:
        plan = query(gateway, f'EXPLAIN SELECT * FROM "{referencing_topic}"').to_pylist()
        assert "LakeTierExec" in str(plan), plan
        check(query(gateway, f'SELECT * FROM "{referencing_topic}" ORDER BY _offset').to_pylist())
    finally:
        gateway.stop()
