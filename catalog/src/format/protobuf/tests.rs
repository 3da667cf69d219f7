//! Index paths, the type mapping, and decoding (values, evolution, poison)
//! against schemas compiled from `.proto` text, without a registry.

use std::sync::Arc;

use base64::Engine;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::util::pretty::pretty_format_batches;
use prost_reflect::prost::Message;
use prost_reflect::{DynamicMessage, FileDescriptor, MapKey, Value};

use super::schema::compile;
use super::*;
use crate::format::ValueDecoder;
use crate::format::registry::SchemaError;
use crate::format::registry::{RegisteredSchema, SchemaType};

const SHOP: &str = r#"
syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/duration.proto";

enum Status { NEW = 0; PAID = 1; }

message Order {
  int64 id = 1;
  optional string customer = 2;
  Address address = 3;
  repeated string tags = 4;
  map<string, int64> attrs = 5;
  Status status = 6;
  oneof payment { string card = 7; int32 voucher = 8; }
  google.protobuf.Timestamp placed_at = 9;
  google.protobuf.Int64Value discount = 10;
  uint32 small = 11;
  uint64 big = 12;
  google.protobuf.Duration took = 13;
  repeated Line lines = 14;
  message Line { string sku = 1; sint32 qty = 2; }
}

message Address { string city = 1; bytes zip = 2; }
"#;

fn proto(text: &str) -> RegisteredSchema {
    RegisteredSchema {
        id: None,
        version: None,
        schema_type: SchemaType::Protobuf,
        schema: text.to_string(),
        references: Vec::new(),
    }
}

fn file(text: &str) -> FileDescriptor {
    futures::executor::block_on(compile(None, &proto(text))).unwrap()
}

fn refused(text: &str, message: Option<&str>) -> String {
    match futures::executor::block_on(compile(None, &proto(text))) {
        Ok(file) => ProtobufFormat::new(&file, message, None).unwrap_err(),
        Err(SchemaError::Invalid(why)) => why,
        Err(other) => panic!("{other}"),
    }
}

/// `[0][id][path][message]`.
fn framed(id: u32, path: &[u8], message: &DynamicMessage) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(path);
    out.extend(message.encode_to_vec());
    out
}

fn decode(
    format: ProtobufFormat,
    values: &[Option<Vec<u8>>],
) -> (RecordBatch, Vec<Option<String>>) {
    let format = Arc::new(format);
    let mut decoder = ProtobufDecoder::new(Arc::clone(&format));
    for value in values {
        decoder.append(value.as_deref());
    }
    let decoded = decoder.finish().unwrap();
    let errors = decoded.errors.as_string::<i32>();
    let errors = (0..errors.len())
        .map(|row| errors.is_valid(row).then(|| errors.value(row).to_string()))
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(format.value_schema()), decoded.columns).unwrap();
    (batch, errors)
}

#[test]
fn index_paths_parse_with_the_single_zero_shortcut() {
    assert_eq!(index_path(&[0, 9]), Ok((vec![0], &[9u8][..])));
    // count 1, index 1 (zig-zag: 2, 2)
    assert_eq!(index_path(&[2, 2, 7]), Ok((vec![1], &[7u8][..])));
    // count 2: [1, 0], a nested message
    assert_eq!(index_path(&[4, 2, 0]), Ok((vec![1, 0], &[][..])));
    // multi-byte varints: count 1, index 64 (zig-zag 128 = 0x80 0x01)
    assert_eq!(index_path(&[2, 0x80, 0x01]), Ok((vec![64], &[][..])));
    assert!(index_path(&[]).unwrap_err().contains("truncated"));
    assert!(index_path(&[4, 2]).unwrap_err().contains("truncated"));
    assert!(index_path(&[0x80]).unwrap_err().contains("truncated"));
    assert!(index_path(&[1]).unwrap_err().contains("-1 indexes"));
    assert!(index_path(&[2, 1]).unwrap_err().contains("index -1"));
    assert!(
        index_path(&[0xfe, 0x01])
            .unwrap_err()
            .contains("127 indexes")
    );
    assert!(index_path(&[0xff; 9]).is_err(), "longer than an i32");
}

#[test]
fn paths_pick_top_level_and_nested_messages() {
    let shop = file(SHOP);
    assert_eq!(message_at(&shop, &[0]).unwrap().full_name(), "shop.Order");
    assert_eq!(message_at(&shop, &[1]).unwrap().full_name(), "shop.Address");
    // Order's nested types: the map entry of `attrs`, then Line.
    let nested = message_at(&shop, &[0, 1]).unwrap();
    assert_eq!(nested.full_name(), "shop.Order.Line");
    assert!(message_at(&shop, &[2]).unwrap_err().contains("past"));
    assert!(
        message_at(&shop, &[0, 5])
            .unwrap_err()
            .contains("at index 1")
    );
}

#[test]
fn types_map_to_the_columns_both_tiers_store() {
    let format = ProtobufFormat::new(&file(SHOP), None, None).unwrap();
    assert_eq!(format.message_name(), "shop.Order");
    let shown: Vec<String> = format
        .value_schema()
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        shown,
        [
            "id Int64",
            "customer Utf8",
            "address Struct(\"city\": Utf8, \"zip\": Binary)",
            "tags List(non-null Utf8)",
            "attrs Map(\"entries\": non-null Struct(\"key\": non-null Utf8, \"value\": Int64), unsorted)",
            "status Utf8",
            "payment Struct(\"card\": Utf8, \"voucher\": Int32)",
            "placed_at Timestamp(µs, \"UTC\")",
            "discount Int64",
            "small Int64",
            "big Decimal128(20, 0)",
            "took Int64",
            "lines List(non-null Struct(\"sku\": Utf8, \"qty\": Int32))",
        ]
    );
    assert!(
        format
            .value_schema()
            .fields()
            .iter()
            .all(|f| f.is_nullable())
    );
    let named = ProtobufFormat::new(&file(SHOP), Some("Address"), None).unwrap();
    assert_eq!(named.message_name(), "shop.Address");
    let nested = ProtobufFormat::new(&file(SHOP), Some("shop.Order.Line"), None).unwrap();
    assert_eq!(nested.value_schema().fields().len(), 2);
    assert!(refused(SHOP, Some("Nope")).contains("no message 'Nope'"));
}

#[test]
fn recursive_and_unstorable_messages_are_refused_with_the_reason() {
    let direct = "syntax = \"proto3\"; message Node { int32 v = 1; Node next = 2; }";
    let why = refused(direct, None);
    assert!(
        why.contains("Node contains itself") && why.contains("next"),
        "{why}"
    );
    let through = "syntax = \"proto3\"; message A { B b = 1; } message B { repeated A a = 1; }";
    let why = refused(through, None);
    assert!(why.contains("A contains itself (through A > B)"), "{why}");
    let empty = "syntax = \"proto3\"; message A { E e = 1; } message E {}";
    assert!(refused(empty, None).contains("no fields"));
    let reserved = "syntax = \"proto3\"; message A { int32 _offset = 1; }";
    assert!(refused(reserved, None).contains("reserved"));
    assert!(refused("syntax = \"proto3\";", None).contains("no message"));
    assert!(refused("message {", None).contains("invalid Protobuf schema"));
}

#[test]
fn a_base64_file_descriptor_reads_like_its_text() {
    let shop = file(SHOP);
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(shop.file_descriptor_proto().encode_to_vec());
    let again = file(&encoded);
    let a = ProtobufFormat::new(&shop, None, None).unwrap();
    let b = ProtobufFormat::new(&again, None, None).unwrap();
    assert_eq!(a.value_schema(), b.value_schema());
}

fn order(shop: &FileDescriptor, id: i64) -> DynamicMessage {
    let pool = shop.parent_pool();
    let desc = pool.get_message_by_name("shop.Order").unwrap();
    let mut order = DynamicMessage::new(desc);
    order.set_field_by_name("id", Value::I64(id));
    order
}

#[test]
fn values_decode_into_typed_columns_and_defaults_are_values() {
    let shop = file(SHOP);
    let pool = shop.parent_pool();
    let message = |name: &str| DynamicMessage::new(pool.get_message_by_name(name).unwrap());
    let mut full = order(&shop, 7);
    full.set_field_by_name("customer", Value::String("ann".into()));
    let mut address = message("shop.Address");
    address.set_field_by_name("city", Value::String("Oslo".into()));
    full.set_field_by_name("address", Value::Message(address));
    full.set_field_by_name(
        "tags",
        Value::List(vec![Value::String("a".into()), Value::String("b".into())]),
    );
    full.set_field_by_name(
        "attrs",
        Value::Map(
            [
                (MapKey::String("z".into()), Value::I64(2)),
                (MapKey::String("y".into()), Value::I64(1)),
            ]
            .into(),
        ),
    );
    full.set_field_by_name("status", Value::EnumNumber(1));
    full.set_field_by_name("voucher", Value::I32(5));
    let mut at = message("google.protobuf.Timestamp");
    at.set_field_by_name("seconds", Value::I64(1_700_000_000));
    at.set_field_by_name("nanos", Value::I32(123_456_789));
    full.set_field_by_name("placed_at", Value::Message(at));
    let mut discount = message("google.protobuf.Int64Value");
    discount.set_field_by_name("value", Value::I64(0));
    full.set_field_by_name("discount", Value::Message(discount));
    full.set_field_by_name("small", Value::U32(u32::MAX));
    full.set_field_by_name("big", Value::U64(u64::MAX));
    let mut took = message("google.protobuf.Duration");
    took.set_field_by_name("seconds", Value::I64(-2));
    took.set_field_by_name("nanos", Value::I32(-500_000_000));
    full.set_field_by_name("took", Value::Message(took));
    let mut line = message("shop.Order.Line");
    line.set_field_by_name("sku", Value::String("x".into()));
    line.set_field_by_name("qty", Value::I32(-3));
    full.set_field_by_name("lines", Value::List(vec![Value::Message(line)]));
    let mut unknown_enum = order(&shop, 8);
    unknown_enum.set_field_by_name("status", Value::EnumNumber(9));

    let format = ProtobufFormat::new(&shop, None, None)
        .unwrap()
        .with_writer(1, shop.clone());
    let values = [
        Some(framed(1, &[0], &full)),
        Some(framed(1, &[0], &order(&shop, 0))), // every field at its default
        Some(framed(1, &[2, 0], &unknown_enum)), // the long form of path [0]
        None,
    ];
    let (batch, errors) = decode(format, &values);
    assert_eq!(errors, [None, None, None, None]);
    let shown = pretty_format_batches(&[batch]).unwrap().to_string();
    let expected = "\
+----+----------+---------------------+--------+--------------+--------+----------------------+-----------------------------+----------+------------+----------------------+----------+---------------------+
| id | customer | address             | tags   | attrs        | status | payment              | placed_at                   | discount | small      | big                  | took     | lines               |
+----+----------+---------------------+--------+--------------+--------+----------------------+-----------------------------+----------+------------+----------------------+----------+---------------------+
| 7  | ann      | {city: Oslo, zip: } | [a, b] | {y: 1, z: 2} | PAID   | {card: , voucher: 5} | 2023-11-14T22:13:20.123456Z | 0        | 4294967295 | 18446744073709551615 | -2500000 | [{sku: x, qty: -3}] |
| 0  |          |                     | []     | {}           | NEW    |                      |                             |          | 0          | 0                    |          | []                  |
| 8  |          |                     | []     | {}           | 9      |                      |                             |          | 0          | 0                    |          | []                  |
|    |          |                     |        |              |        |                      |                             |          |            |                      |          |                     |
+----+----------+---------------------+--------+--------------+--------+----------------------+-----------------------------+----------+------------+----------------------+----------+---------------------+";
    assert_eq!(shown, expected, "\n{shown}");
}

#[test]
fn writer_versions_resolve_by_field_name() {
    let v1 = file(
        "syntax = \"proto3\"; package p; message M { int32 id = 1; string gone = 2; float score = 3; }",
    );
    let v2 = file(
        "syntax = \"proto3\"; package p; message M { int64 id = 1; double score = 3; optional string added = 4; }",
    );
    let format = ProtobufFormat::new(&v2, None, None)
        .unwrap()
        .with_writer(1, v1.clone())
        .with_writer(2, v2.clone());
    let mut old = DynamicMessage::new(v1.messages().next().unwrap());
    old.set_field_by_name("id", Value::I32(1));
    old.set_field_by_name("gone", Value::String("x".into()));
    old.set_field_by_name("score", Value::F32(0.5));
    let mut new = DynamicMessage::new(v2.messages().next().unwrap());
    new.set_field_by_name("id", Value::I64(2));
    new.set_field_by_name("added", Value::String("y".into()));
    let (batch, errors) = decode(
        format,
        &[Some(framed(1, &[0], &old)), Some(framed(2, &[0], &new))],
    );
    assert_eq!(errors, [None, None]);
    assert_eq!(
        batch
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec(),
        [1, 2],
        "int32 widens to the table's int64"
    );
    let score = batch
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    assert_eq!((score.value(0), score.value(1)), (0.5, 0.0));
    let added = batch.column(2).as_string::<i32>();
    assert!(added.is_null(0) && added.value(1) == "y");
}

#[test]
fn values_that_do_not_decode_are_rows_with_the_reason_and_their_bytes() {
    let shop = file(SHOP);
    let other = file("syntax = \"proto3\"; package shop; message Order { string id = 1; }");
    let format = ProtobufFormat::new(&shop, None, None)
        .unwrap()
        .with_writer(1, shop.clone())
        .with_writer(2, other);
    let good = framed(1, &[0], &order(&shop, 1));
    let mut truncated = framed(1, &[0], &order(&shop, 300));
    truncated.pop();
    let mut bad_time = order(&shop, 2);
    let mut at = DynamicMessage::new(
        shop.parent_pool()
            .get_message_by_name("google.protobuf.Timestamp")
            .unwrap(),
    );
    at.set_field_by_name("seconds", Value::I64(i64::MAX));
    bad_time.set_field_by_name("placed_at", Value::Message(at));
    let address = DynamicMessage::new(
        shop.parent_pool()
            .get_message_by_name("shop.Address")
            .unwrap(),
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"id\": 1}".to_vec(), "first byte is 0x7b"),
        (
            framed(9, &[0], &order(&shop, 1)),
            "schema id 9 is not known",
        ),
        (framed(0, &[0], &order(&shop, 1)), "schema id 0 cannot be"),
        (framed(1, &[2, 8], &order(&shop, 1)), "points past"),
        (
            framed(1, &[0x80], &order(&shop, 1))[..6].to_vec(),
            "truncated message-index path",
        ),
        (truncated, "invalid Protobuf"),
        (
            framed(1, &[2, 2], &address),
            "a shop.Address message, and this table reads shop.Order",
        ),
        (
            framed(2, &[0], &order(&shop, 1)),
            "schema id 2 does not fit the table: id",
        ),
        (framed(1, &[0], &bad_time), "placed_at: invalid Timestamp"),
        (vec![0, 0, 0], "truncated Confluent header"),
    ];
    let mut values = vec![Some(good.clone())];
    for (value, _) in &cases {
        values.push(Some(value.clone()));
        values.push(Some(good.clone()));
    }
    let format = Arc::new(format);
    let mut decoder = ProtobufDecoder::new(Arc::clone(&format));
    for value in &values {
        decoder.append(value.as_deref());
    }
    let decoded = decoder.finish().unwrap();
    let ids = decoded.columns[0].as_primitive::<Int64Type>();
    let errors = decoded.errors.as_string::<i32>();
    let kept = decoded.undecoded.as_binary::<i32>();
    for (i, (value, why)) in cases.iter().enumerate() {
        let row = 1 + 2 * i;
        assert!(
            errors.value(row).contains(why),
            "{why}: {}",
            errors.value(row)
        );
        assert!(ids.is_null(row) && kept.value(row) == value.as_slice());
        assert!(decoded.columns.iter().all(|c| c.is_null(row)));
        assert_eq!(ids.value(row + 1), 1, "the next value still decodes");
        assert!(errors.is_null(row + 1) && kept.is_null(row + 1));
    }
    // The decoder is ready for the next batch.
    decoder.append(Some(&good));
    let next = decoder.finish().unwrap();
    assert_eq!(next.columns[0].as_primitive::<Int64Type>().value(0), 1);
    assert_eq!(next.columns[5].len(), 1);
}
