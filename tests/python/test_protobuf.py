"""Protobuf topics as typed tables: values produced by confluent-kafka's own ProtobufSerializer through a
schema registry (the Confluent wire format, with message-index paths and schema references), read
through the real gateway with a TOML definition and with none, and tiered by the compactor. The
message classes are built at test time from FileDescriptorProtos written here (no protoc); the
registry is tests/registry/test_registry.py, a test double of the Confluent REST API."""

import datetime
import os
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from deltalake import DeltaTable
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2, wrappers_pb2

from conftest import Gateway, closed_port, create_topic, produce, query, unique
from test_compactor import compactor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "registry"))
import test_registry  # noqa: E402 (the registry test double)

F = descriptor_pb2.FieldDescriptorProto
BASE = datetime.datetime(2026, 11, 30, 12, 0, 0, tzinfo=datetime.timezone.utc)
STATUSES = ["NEW", "PAID", "SHIPPED"]


def field(name, number, kind, type_name=None, repeated=False, oneof=None, optional=False):
    out = F(name=name, number=number, type=kind, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:
        out.type_name = type_name
    if oneof is not None:
        out.oneof_index = oneof
    if optional:
        out.proto3_optional = True
    return out


def common_file():
    """shop/common.proto: imported by the orders file, so registered as a reference of its own."""
    f = descriptor_pb2.FileDescriptorProto(name="shop/common.proto", package="shop.common", syntax="proto3")
    money = f.message_type.add(name="Money")
    money.field.extend([field("units", 1, F.TYPE_INT64), field("currency", 2, F.TYPE_STRING)])
    status = f.enum_type.add(name="Status")
    for number, name in enumerate(STATUSES):
        status.value.add(name=name, number=number)
    return f


def orders_file(version):
    """shop/orders.proto: Refund first, then Order (index path [1]); v2 adds Order.channel."""
    f = descriptor_pb2.FileDescriptorProto(name="shop/orders.proto", package="shop", syntax="proto3")
    f.dependency.extend(["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto", "shop/common.proto"])
    refund = f.message_type.add(name="Refund")
    refund.field.extend([field("order_id", 1, F.TYPE_INT64), field("reason", 2, F.TYPE_STRING)])
    order = f.message_type.add(name="Order")
    address = order.nested_type.add(name="Address")
    address.field.extend([field("city", 1, F.TYPE_STRING), field("zip", 2, F.TYPE_STRING, oneof=0, optional=True)])
    address.oneof_decl.add(name="_zip")
    entry = order.nested_type.add(name="AttrsEntry")
    entry.options.map_entry = True
    entry.field.extend([field("key", 1, F.TYPE_STRING), field("value", 2, F.TYPE_INT64)])
    order.oneof_decl.add(name="payment")
    order.oneof_decl.add(name="_customer")
    order.field.extend([
        field("id", 1, F.TYPE_INT64),
        field("customer", 2, F.TYPE_STRING, oneof=1, optional=True),
        field("address", 3, F.TYPE_MESSAGE, ".shop.Order.Address"),
        field("tags", 4, F.TYPE_STRING, repeated=True),
        field("attrs", 5, F.TYPE_MESSAGE, ".shop.Order.AttrsEntry", repeated=True),
        field("status", 6, F.TYPE_ENUM, ".shop.common.Status"),
        field("card", 7, F.TYPE_STRING, oneof=0),
        field("voucher", 8, F.TYPE_MESSAGE, ".shop.common.Money", oneof=0),
        field("placed_at", 9, F.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        field("discount", 10, F.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        field("qty", 11, F.TYPE_SINT32),
    ])
    if version == 2:
        order.field.append(field("channel", 12, F.TYPE_STRING))
    return f


def key_class():
    """shop/keys.proto: a message for keys, on the `<topic>-key` subject."""
    f = descriptor_pb2.FileDescriptorProto(name="shop/keys.proto", package="shop", syntax="proto3")
    key = f.message_type.add(name="RefundKey")
    key.field.extend([field("region", 1, F.TYPE_STRING), field("n", 2, F.TYPE_INT64)])
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(f.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.RefundKey"))


def classes(version):
    """The Order and Refund classes of a version, each version in a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, wrappers_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(common_file().SerializeToString())
    pool.AddSerializedFile(orders_file(version).SerializeToString())
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"shop.{name}"))
            for name in ("Order", "Refund")}


def order(cls, i, version):
    """Order i: every other field set or left at its default, by i."""
    value = cls(id=i, tags=[f"t{j}" for j in range(i % 3)], status=i % 3, qty=-i)
    if i % 4:
        value.customer = f"c{i % 5}"
    if i % 2 == 0:
        value.address.city = f"city{i}"
        if i % 3 == 0:
            value.address.zip = f"{10000 + i}"
    for key, n in (("n", i), ("double", 2 * i)):
        value.attrs[key] = n
    if i % 3 == 1:
        value.card = f"card{i}"
    elif i % 3 == 2:
        value.voucher.units = i
        value.voucher.currency = "EUR"
    if i % 5:
        value.placed_at.FromDatetime(BASE + datetime.timedelta(seconds=i, microseconds=i))
    if i % 2:
        value.discount.value = 0 if i % 3 == 0 else i
    if version == 2:
        value.channel = "app" if i % 2 else ""
    return value


def expected(i, version):
    """The row order i of `version` reads as (the latest version's columns)."""
    return {
        "id": i,
        "customer": f"c{i % 5}" if i % 4 else None,  # optional: null when not set
        "address": None if i % 2 else {"city": f"city{i}", "zip": f"{10000 + i}" if i % 3 == 0 else None},
        "tags": [f"t{j}" for j in range(i % 3)],
        "attrs": [("double", 2 * i), ("n", i)],  # sorted by key
        "status": STATUSES[i % 3],
        "payment": [None, {"card": f"card{i}", "voucher": None},
                    {"card": None, "voucher": {"units": i, "currency": "EUR"}}][i % 3],
        "placed_at": BASE + datetime.timedelta(seconds=i, microseconds=i) if i % 5 else None,
        "discount": (0 if i % 3 == 0 else i) if i % 2 else None,
        "qty": -i,  # proto3 scalars without presence read as their value, 0 included
        # v1 lacks the field: null; v2 writes "" by leaving it out, which proto3 reads as "".
        "channel": None if version == 1 else ("app" if i % 2 else ""),
    }


def serializer(client, cls):
    return ProtobufSerializer(cls, client, {"use.deprecated.format": False})


@pytest.fixture(scope="module")
def orders_topic(brokers, registry):
    """v1 then v2 Orders (index path [1]) with poison values in the middle of the partition."""
    topic = unique("proto-orders")
    create_topic(brokers, topic, partitions=1)
    client = SchemaRegistryClient({"url": registry})
    context = SerializationContext(topic, MessageField.VALUE)
    v1, v2 = classes(1), classes(2)
    write1, write2 = serializer(client, v1["Order"]), serializer(client, v2["Order"])
    values = [write1(order(v1["Order"], i, 1), context) for i in range(10)]
    good = write2(order(v2["Order"], 11, 2), context)
    assert good[5:7] == b"\x02\x02", "count 1, index 1: Order is the file's second message"
    values += [
        b"\x01not framed",                     # wrong magic byte
        b"\x00\x00\x00\x03\xe7" + good[5:],      # schema id 999: not in the registry
        good[:5] + b"\x02\x0e" + good[7:],       # index path [7]: no such message
        good[:-2],                             # truncated body (channel "app" loses its bytes)
    ]
    values += [write2(order(v2["Order"], i, 2), context) for i in range(10, 20)]
    produce(brokers, topic, [{"partition": 0, "value": v} for v in values])
    assert len(client.get_versions(f"{topic}-value")) == 2
    assert client.get_versions("shop/common.proto") == [1], "the import is a reference"
    config = (f'[[tables]]\nname = "orders_{topic[-12:]}"\ntopic = "{topic}"\n'
              f'format = "protobuf-confluent"\nmessage = "shop.Order"\n')
    return {"topic": topic, "values": values, "config": config, "table": f"orders_{topic[-12:]}"}


def check_rows(rows, values):
    assert len(rows) == 24, len(rows)
    good = [r for r in rows if r["_error"] is None]
    assert [r["id"] for r in good] == list(range(20)), [r["_error"] for r in rows]
    for row in good:
        i = row["id"]
        want = expected(i, 1 if i < 10 else 2)
        assert {k: row[k] for k in want} == want, i
        assert row["_value"] is None, "decoded values keep no bytes"
    bad = rows[10:14]
    errors = [r["_error"] for r in bad]
    assert "first byte is 0x01" in errors[0], errors
    assert "schema id 999 is not in the schema registry" in errors[1], errors
    assert "message-index path [7] points past" in errors[2], errors
    assert "invalid Protobuf" in errors[3], errors
    assert [r["_value"] for r in bad] == values[10:14], "bad values keep their bytes"
    assert all(r["id"] is None and r["payment"] is None for r in bad), "a bad value is a row of nulls"


TYPES = {
    "id": "int64", "customer": "string", "address": "struct<city: string, zip: string>",
    "tags": "list<item: string not null>", "attrs": "map<string, int64>", "status": "string",
    "payment": "struct<card: string, voucher: struct<units: int64, currency: string>>",
    "placed_at": "timestamp[us, tz=UTC]", "discount": "int64", "qty": "int32", "channel": "string",
}


def test_a_protobuf_definition_reads_every_version_of_its_subject(brokers, registry, orders_topic):
    gateway = Gateway(brokers, orders_topic["config"], extra_args=["--schema-registry", registry])
    try:
        table = query(gateway, f'SELECT * FROM {orders_topic["table"]} ORDER BY _offset')
        types = {f.name: str(f.type) for f in table.schema if not f.name.startswith("_")}
        assert types == TYPES, types
        check_rows(table.to_pylist(), orders_topic["values"])
        rows = query(gateway, f"SELECT id, payment['voucher']['units'] AS units, address['city'] AS city "
                              f"FROM {orders_topic['table']} WHERE status = 'SHIPPED' AND id < 10 ORDER BY id")
        assert rows.to_pylist() == [{"id": i, "units": i, "city": None if i % 2 else f"city{i}"} for i in (2, 5, 8)]
    finally:
        gateway.stop()


def test_a_definition_pinned_to_the_first_version_skips_fields_added_later(brokers, registry, orders_topic):
    config = orders_topic["config"] + "schema_version = 1\n"
    gateway = Gateway(brokers, config, extra_args=["--schema-registry", registry])
    try:
        table = query(gateway, f'SELECT * FROM {orders_topic["table"]} ORDER BY _offset')
        assert "channel" not in table.schema.names and "qty" in table.schema.names
        rows = [r for r in table.to_pylist() if r["_error"] is None]
        assert [r["id"] for r in rows] == list(range(20))
        for row in rows:
            want = expected(row["id"], 1)
            del want["channel"]
            assert {k: row[k] for k in want} == want
    finally:
        gateway.stop()


def test_a_protobuf_subject_is_a_table_of_its_first_message(brokers, registry, orders_topic):
    topic = unique("proto-refunds")
    create_topic(brokers, topic, partitions=1)
    client = SchemaRegistryClient({"url": registry})
    refund = classes(2)["Refund"]
    write = serializer(client, refund)
    context = SerializationContext(topic, MessageField.VALUE)
    values = [write(refund(order_id=i, reason="" if i == 1 else f"r{i}"), context) for i in range(3)]
    assert all(v[5:6] == b"\x00" for v in values), "index path [0]: the single-zero shortcut"
    key = key_class()
    key_context = SerializationContext(topic, MessageField.KEY)
    keys = [serializer(client, key)(key(region=f"r{i % 2}", n=i), key_context) for i in range(3)]
    keys[1] = b"\x00\x00\x00\x03\xe7\x00"  # schema id 999
    produce(brokers, topic, [{"partition": 0, "key": k, "value": v} for k, v in zip(keys, values)])
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry])
    try:
        rows = query(gateway, f'SELECT key, order_id, reason, _error FROM "{topic}" ORDER BY _offset').to_pylist()
        assert [r["key"] for r in rows] == [{"region": "r0", "n": 0}, None, {"region": "r0", "n": 2}], rows
        assert rows[1]["_error"].startswith("key: schema id 999"), rows
        assert [{k: r[k] for k in ("order_id", "reason")} for r in rows] == \
            [{"order_id": i, "reason": "" if i == 1 else f"r{i}"} for i in range(3)], "a bad key costs no value"
        assert rows[0]["_error"] is None and rows[2]["_error"] is None
        # The orders topic's subject file starts with Refund too: with no definition naming
        # shop.Order, its Orders are rows that say so rather than misread fields.
        rows = query(gateway, f'SELECT order_id, _error FROM "{orders_topic["topic"]}" LIMIT 1').to_pylist()
        assert rows[0]["order_id"] is None
        assert "a shop.Order message, and this table reads shop.Refund" in rows[0]["_error"], rows
    finally:
        gateway.stop()


def test_a_registry_that_is_down_fails_the_query(brokers, orders_topic):
    server, url = test_registry.serve()
    client = SchemaRegistryClient({"url": url})
    topic = unique("proto-down")
    create_topic(brokers, topic, partitions=1)
    v2 = classes(2)
    value = serializer(client, v2["Order"])(order(v2["Order"], 1, 2), SerializationContext(topic, MessageField.VALUE))
    produce(brokers, topic, [{"partition": 0, "value": value}])
    config = f'[[tables]]\nname = "down"\ntopic = "{topic}"\nformat = "protobuf-confluent"\nmessage = "Order"\n'
    gateway = Gateway(brokers, config, extra_args=["--schema-registry", url, "--schema-registry-timeout", "2s"])
    try:
        # Down after the definition was resolved: the writer schema cannot be fetched.
        server.registry.down = True
        started = time.monotonic()
        with pytest.raises((flightsql.Error, OSError)) as failed:
            query(gateway, "SELECT * FROM down")
        assert time.monotonic() - started < 15
        message = str(failed.value)
        assert "(Unavailable;" in message and url in message, message
    finally:
        gateway.stop()
        server.shutdown()
    gone = f"http://127.0.0.1:{closed_port()}"
    gateway = Gateway(brokers, extra_args=["--schema-registry", gone, "--schema-registry-timeout", "2s"])
    try:
        with pytest.raises((flightsql.Error, OSError)) as failed:
            query(gateway, f'SELECT * FROM "{orders_topic["topic"]}"')
        assert "(Unavailable;" in str(failed.value), str(failed.value)
    finally:
        gateway.stop()


def test_the_compactor_tiers_a_protobuf_topic_into_typed_delta_columns(brokers, registry, orders_topic, tmp_path):
    lake = tmp_path / "lake"
    config = tmp_path / "kappa.toml"
    config.write_text(orders_topic["config"])
    table = orders_topic["table"]
    run = compactor(brokers, lake, config, "--table", table, "--tier-after", "0s", "--schema-registry", registry)
    assert run.returncode == 0, run.stderr
    tiered = DeltaTable(str(lake / "tables" / table)).to_pyarrow_table()
    # Parquet names a list's items `element`.
    types = {f.name: str(f.type).replace("<element:", "<item:") for f in tiered.schema if not f.name.startswith("_")}
    assert types == TYPES, types
    lake_rows = sorted(tiered.to_pylist(), key=lambda r: r["_offset"])
    check_rows(lake_rows, orders_topic["values"])

    gateway = Gateway(brokers, orders_topic["config"], extra_args=["--schema-registry", registry, "--lake", str(lake)])
    try:
        assert "LakeTierExec" in str(query(gateway, f"EXPLAIN SELECT * FROM {table}").to_pylist())
        rows = query(gateway, f"SELECT * FROM {table} ORDER BY _offset").to_pylist()
        check_rows(rows, orders_topic["values"])
    finally:
        gateway.stop()


def test_a_protobuf_table_defined_by_sql_reads_as_its_definition_says(brokers, registry, orders_topic, tmp_path):
    """CREATE EXTERNAL TABLE … 'protobuf-confluent' names the message (not the file's first) and keeps the
    subject's latest version it resolved; SHOW CREATE TABLE shows both."""
    gateway = Gateway(brokers, extra_args=["--schema-registry", registry, "--lake", str(tmp_path / "lake")])
    try:
        query(gateway, f"CREATE EXTERNAL TABLE proto_by_sql STORED AS KAFKA LOCATION '{orders_topic['topic']}' "
                       "OPTIONS ('value.format' 'protobuf-confluent', 'value.protobuf.message' 'shop.Order')")
        table = query(gateway, "SELECT * FROM proto_by_sql ORDER BY _offset")
        types = {f.name: str(f.type) for f in table.schema if not f.name.startswith("_")}
        assert types == TYPES, types
        check_rows(table.to_pylist(), orders_topic["values"])
        shown = query(gateway, "SHOW CREATE TABLE proto_by_sql").to_pylist()[0]["definition"]
        assert "'value.schema.version' '2'" in shown and "'value.protobuf.message' 'shop.Order'" in shown, shown
    finally:
        gateway.stop()
