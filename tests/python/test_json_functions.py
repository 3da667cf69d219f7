"""JSON functions over a raw topic's `_value`: a topic of JSON values with no definition reads field
by field (`json_get_str(_value, 'customer')`, `_value ->> 'id'`, nested paths, filters), with the same
answers once the compactor has tiered it into the lake and rows come from there."""

import json
import os
import subprocess

import pytest
from deltalake import DeltaTable

from conftest import DEADLINE_S, Gateway, create_topic, produce, query, unique

PARTITIONS = 2


def record(i):
    return {"id": i, "customer": f"c{i % 3}", "amount": i * 1.5, "address": {"city": f"town{i % 2}"},
            "tags": ["new", "vip"] if i % 4 == 0 else ["old"]}


def produce_orders(brokers, topic, ids):
    produce(brokers, topic, [{"partition": i % PARTITIONS, "value": json.dumps(record(i)).encode()} for i in ids])


def expected(ids):
    """What the queries below answer over the records `ids` (and the bad values, which read as NULL)."""
    orders = [record(i) for i in ids]
    return {
        "fields": sorted((o["id"], o["customer"], o["amount"], o["address"]["city"], str(o["id"]), o["tags"][-1])
                         for o in orders),
        "c1": sorted(o["id"] for o in orders if o["customer"] == "c1"),
        "totals": {c: sum(o["amount"] for o in orders if o["customer"] == c) for c in ("c0", "c1", "c2")},
        "new_town0": sorted(o["id"] for o in orders if o["tags"][0] == "new" and o["address"]["city"] == "town0"),
    }


def answers(gateway, table):
    fields = query(gateway, f"""
        SELECT json_get_int(_value, 'id') AS id, json_get_str(_value, 'customer') AS customer,
               json_get_float(_value, 'amount') AS amount, json_get_str(_value, 'address', 'city') AS city,
               _value ->> 'id' AS id_text, json_get_str(_value, 'tags', -1) AS last_tag
        FROM {table}""").to_pylist()
    bad = [r for r in fields if r["id"] is None]
    assert len(bad) == 3 and all(set(r.values()) == {None} for r in bad), \
        "not JSON, not UTF-8 and a tombstone: every field NULL, and the query does not fail"
    c1 = query(gateway, f"SELECT json_get_int(_value, 'id') AS id FROM {table} "
                        "WHERE json_get_str(_value, 'customer') = 'c1'").column("id").to_pylist()
    totals = query(gateway, f"SELECT _value ->> 'customer' AS customer, sum(json_get_float(_value, 'amount')) AS total "
                            f"FROM {table} WHERE _value IS NOT NULL GROUP BY 1").to_pylist()
    new = query(gateway, f"SELECT (_value -> 'id')::int AS id FROM {table} "
                         "WHERE json_contains(_value, 'tags') AND (_value #>> array['address', 'city']) = 'town0' "
                         "AND json_get_str(_value, 'tags', 0) = 'new'").column("id").to_pylist()
    return {
        "fields": sorted((r["id"], r["customer"], r["amount"], r["city"], r["id_text"], r["last_tag"])
                         for r in fields if r["id"] is not None),
        "c1": sorted(c1),
        "totals": {r["customer"]: r["total"] for r in totals if r["customer"] is not None},
        "new_town0": sorted(new),
    }


def tier(brokers, lake, topic):
    """One compactor pass over the topic, undeclared: it is tiered as a raw table."""
    binary = os.environ.get("KAPPA_COMPACTOR_BIN")
    if not binary:
        pytest.fail("KAPPA_COMPACTOR_BIN is not set: run scripts/test.sh", pytrace=False)
    run = subprocess.run([binary, "run", "--once", "--brokers", brokers, "--lake", str(lake), "--table", topic,
                          "--tier-after", "0s"], capture_output=True, text=True, timeout=DEADLINE_S * 4,
                         env=dict(os.environ, KAPPA_LOG="warn"))
    assert run.returncode == 0, run.stderr


def test_json_fields_of_a_raw_topic_from_kafka_and_from_the_lake(brokers, tmp_path):
    topic = "rawjson_" + unique("t").split("-")[-1]
    create_topic(brokers, topic, partitions=PARTITIONS)
    produce_orders(brokers, topic, range(40))
    produce(brokers, topic, [{"partition": 0, "value": b"{oops"}, {"partition": 1, "value": b"\xff\xfe{}"},
                             {"partition": 1, "value": None}])
    lake = tmp_path / "lake"

    gateway = Gateway(brokers)
    try:
        assert answers(gateway, topic) == expected(range(40))
        schema = query(gateway, f"SELECT _value ->> 'customer', json_get_int(_value, 'id') FROM {topic} LIMIT 1").schema
        assert schema.names[0] == "_value ->> 'customer'", schema
        assert str(schema.field(1).type) == "int64"
        # `->` is the JSON value itself (datafusion-functions-json's union type): Arrow clients read it.
        value = query(gateway, f"SELECT _value -> 'address' AS address, _value -> 'id' AS id FROM {topic} "
                               "WHERE json_get_int(_value, 'id') = 4").to_pylist()
        assert len(value) == 1 and json.loads(value[0]["address"]) == {"city": "town0"} and value[0]["id"] == 4
    finally:
        gateway.stop()

    # Tiered: everything so far is in the lake (`_value` kept as bytes), and more arrives in Kafka.
    tier(brokers, lake, topic)
    dt = DeltaTable(str(lake / "tables" / topic))
    watermarks = {p: dt.transaction_version(f"kappa/{topic}/{p}") for p in range(PARTITIONS)}
    assert watermarks == {0: 21, 1: 22}, watermarks
    values = dt.to_pyarrow_table(columns=["_value"]).column("_value").to_pylist()
    assert len(values) == 43 and b"\xff\xfe{}" in values, "the lake keeps the values' bytes"
    produce_orders(brokers, topic, range(40, 50))

    gateway = Gateway(brokers, extra_args=["--lake", str(lake)])
    try:
        assert answers(gateway, topic) == expected(range(50)), "the same answers over the lake and Kafka"
        # Rows below the watermarks come from the lake; the lake alone answers them the same way.
        lake_only = (f"SELECT json_get_int(_value, 'id') AS id FROM {topic} WHERE _partition = 0 "
                     f"AND _offset < {watermarks[0]} AND json_get_str(_value, 'customer') = 'c1'")
        ids = query(gateway, lake_only).column("id").to_pylist()
        assert sorted(ids) == [i for i in range(40) if i % 2 == 0 and i % 3 == 1]
        plan = "\n".join(query(gateway, f"EXPLAIN {lake_only}").column("plan").to_pylist())
        assert "DeltaScanExec" in plan and "KafkaScanExec" not in plan, plan
        # A stream replays the lake, then Kafka, through the same functions.
        c1 = expected(range(50))["c1"]
        streamed = query(gateway, f"SELECT json_get_int(_value, 'id') AS id FROM tail('{topic}', 'earliest') "
                                  f"WHERE json_get_str(_value, 'customer') = 'c1' LIMIT {len(c1)}")
        assert sorted(streamed.column("id").to_pylist()) == c1
    finally:
        gateway.stop()
