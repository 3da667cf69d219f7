//! Property tests of every decoder and the frame parser: whatever bytes
//! arrive, no panic, no hang, and exactly one row per value, where a row has
//! an `_error` exactly when its bytes are kept in `_value`.
//!
//! Inputs are valid values mutated (bits flipped, bytes cut, inserted or
//! replaced) by a seeded generator, so failures reproduce. The default run
//! is small enough for every test run; `KAPPA_FUZZ_VALUES=N` runs N values
//! per decoder (run it with `--release` for millions).
//!
//! Decoders that look writer schemas up by id run against a registry that
//! holds a few fixed schemas and answers "not found" for every other id a
//! mutated header names ([`SchemaRegistry::fixed`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::avro::{AvroDecoder, AvroFormat};
use super::json::JsonDecoder;
use super::json_schema::{JsonSchemaDecoder, JsonSchemaFormat};
use super::protobuf::{ProtobufDecoder, ProtobufFormat, index_path};
use super::registry::{RegisteredSchema, SchemaRegistry, SchemaType};
use super::{ValueDecoder, framing};

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut value = seed.to_vec();
    for _ in 0..=rng.below(3) {
        match rng.below(6) {
            0 if !value.is_empty() => {
                let at = rng.below(value.len());
                value[at] ^= 1 << rng.below(8);
            }
            1 => value.truncate(rng.below(value.len() + 1)),
            2 => {
                let at = rng.below(value.len() + 1);
                value.insert(at, rng.next() as u8);
            }
            3 if !value.is_empty() => {
                let at = rng.below(value.len());
                value[at] = [0x00, 0x80, 0xff, 0x7f, b'{', b'"'][rng.below(6)];
            }
            4 => value = (0..rng.below(24)).map(|_| rng.next() as u8).collect(),
            _ => {}
        }
    }
    value
}

fn values_to_run() -> usize {
    std::env::var("KAPPA_FUZZ_VALUES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

/// Feeds mutated values in batches of up to 64 (a tombstone now and then)
/// and checks the invariants of every batch. Returns the values run.
fn run(decoder: &mut dyn ValueDecoder, seeds: &[Vec<u8>], seed: u64) -> usize {
    let mut rng = Rng(seed);
    let total = values_to_run();
    let mut done = 0;
    while done < total {
        let batch: Vec<Option<Vec<u8>>> = (0..=rng.below(64))
            .map(|_| {
                (rng.below(50) != 0).then(|| {
                    let seed = &seeds[rng.below(seeds.len())];
                    if rng.below(4) == 0 {
                        seed.clone()
                    } else {
                        mutate(&mut rng, seed)
                    }
                })
            })
            .collect();
        for value in &batch {
            decoder.append(value.as_deref());
        }
        let decoded = decoder
            .finish()
            .expect("bad input is never an error of the batch");
        assert_eq!(decoded.errors.len(), batch.len());
        assert_eq!(decoded.undecoded.len(), batch.len());
        for column in &decoded.columns {
            assert_eq!(column.len(), batch.len());
        }
        for (row, value) in batch.iter().enumerate() {
            let empty = decoded.columns.iter().all(|c| c.is_null(row));
            assert_eq!(
                decoded.errors.is_valid(row) || (value.is_some() && empty),
                decoded.undecoded.is_valid(row),
                "an error or a row of nulls keeps the bytes, a decoded value does not: {value:?}"
            );
            if value.is_none() {
                assert!(decoded.errors.is_null(row), "a tombstone is no error");
            }
        }
        done += batch.len();
    }
    done
}

#[test]
fn avro_decoder_takes_any_bytes() {
    let schema = r#"{"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": ["null", "string"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "double"}},
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "inner", "type": ["null", {"type": "record", "name": "I", "fields": [
            {"name": "x", "type": "int"}, {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}}]}]}]}"#;
    let format = Arc::new(AvroFormat::plain(schema).unwrap());
    let seeds = vec![
        // id 1, null name, [], {}, A, 0.00, null inner
        vec![2, 0, 0, 0, 0, 0, 0],
        // id -3, name "ab", ["x"], {"k": 1.0}, B, 1.23, inner {x 7, at 9}
        [
            &[5u8, 2, 4, b'a', b'b', 2, 2, b'x', 0, 2, 2, b'k'][..],
            &1.0f64.to_le_bytes(),
            &[0, 2, 2, 0x7b, 2, 14, 18],
        ]
        .concat(),
    ];
    let mut decoder = AvroDecoder::new(format);
    assert!(run(&mut decoder, &seeds, 0x5eed) >= values_to_run());
}

/// Which of `seeds`, decoded as they are, are rows with an error: so a run
/// is known to reach the decoding and not only the error paths.
fn seed_errors(decoder: &mut dyn ValueDecoder, seeds: &[Vec<u8>]) -> Vec<bool> {
    for seed in seeds {
        decoder.append(Some(seed));
    }
    let decoded = decoder.finish().unwrap();
    (0..seeds.len())
        .map(|row| decoded.errors.is_valid(row))
        .collect()
}

fn registered(id: u32, schema_type: SchemaType, schema: &str) -> (u32, RegisteredSchema) {
    let schema = RegisteredSchema {
        id: Some(id),
        version: Some(id),
        schema_type,
        schema: schema.into(),
        references: Vec::new(),
    };
    (id, schema)
}

/// `[0][id][body]`.
fn framed(id: u32, body: &[u8]) -> Vec<u8> {
    [&[0][..], &id.to_be_bytes(), body].concat()
}

#[test]
fn avro_confluent_decoder_takes_any_bytes() {
    let v1 = r#"{"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"},
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}}]}"#;
    // v2 adds a union of several types (with a named type used by name).
    let v2 = r#"{"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "long"},
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B"]}},
        {"name": "u", "type": ["null", "string", "double", "K"], "default": null}]}"#;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let registry = Arc::new(SchemaRegistry::fixed([
        registered(1, SchemaType::Avro, v1),
        registered(2, SchemaType::Avro, v2),
        registered(3, SchemaType::Json, r#"{"type": "object"}"#),
        registered(
            4,
            SchemaType::Avro,
            r#"{"type": "record", "name": "R", "fields": [{"name": "id", "type": "string"}]}"#,
        ),
    ]));
    let format = Arc::new(AvroFormat::confluent(v2, registry).unwrap());
    let seeds = vec![
        framed(1, &[6, 2]),                                             // id 3, B
        framed(2, &[5, 0, 2, 4, b'h', b'i']),                           // id -3, A, "hi"
        framed(2, &[&[2u8, 2, 4][..], &2.5f64.to_le_bytes()].concat()), // id 1, B, 2.5
        framed(2, &[2, 0, 6, 2]),                                       // id 1, A, K B
        framed(2, &[2, 0, 0]),                                          // id 1, A, null
        framed(3, b"{}"),                                               // a JSON Schema id
        framed(4, &[2, b'x']),                                          // does not resolve
    ];
    let mut decoder = AvroDecoder::new(format);
    assert_eq!(
        seed_errors(&mut decoder, &seeds),
        [false, false, false, false, false, true, true]
    );
    assert!(run(&mut decoder, &seeds, 0xa7f0) >= values_to_run());
}

#[test]
fn json_schema_decoder_takes_any_bytes() {
    let document = r##"{"type": "object", "definitions": {"A": {"type": "object", "properties": {"city": {"type": "string"}}}},
        "properties": {"id": {"type": "integer"}, "name": {"type": ["null", "string"]},
        "at": {"type": "string", "format": "date-time"}, "on": {"type": "string", "format": "date"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "attrs": {"type": "object", "additionalProperties": {"type": "number"}},
        "address": {"oneOf": [{"type": "null"}, {"$ref": "#/definitions/A"}]}}}"##;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let registry = Arc::new(SchemaRegistry::fixed([
        registered(1, SchemaType::Json, document),
        registered(2, SchemaType::Avro, r#""long""#),
    ]));
    let format = Arc::new(JsonSchemaFormat::confluent(document, registry).unwrap());
    let seeds = vec![
        framed(1, br#"{"id": 1, "name": "a", "at": "2026-12-06T10:00:00.123456Z", "on": "2026-12-06"}"#),
        framed(1, br#"{"id": -7, "tags": ["x"], "attrs": {"k": 1.5}, "address": {"city": "c"}, "extra": [1]}"#),
        framed(1, br#"{"id": 2, "address": null, "tags": null}"#),
        framed(2, &[4]),
    ];
    let mut decoder = JsonSchemaDecoder::new(format).unwrap();
    assert_eq!(
        seed_errors(&mut decoder, &seeds),
        [false, false, false, true]
    );
    assert!(run(&mut decoder, &seeds, 0x75c4) >= values_to_run());
}

#[test]
fn json_decoder_takes_any_bytes() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            true,
        ),
    ]));
    let seeds = vec![
        br#"{"id": 1, "name": "a", "tags": ["x", "y"]}"#.to_vec(),
        br#"{"id": -7, "tags": null, "extra": {"deep": [1, 2]}}"#.to_vec(),
    ];
    let mut decoder = JsonDecoder::new(schema).unwrap();
    run(&mut decoder, &seeds, 0xfeed);
}

#[test]
fn csv_decoder_takes_any_bytes() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Decimal128(9, 2), true),
    ]));
    let seeds = vec![b"1,alice,2.50".to_vec(), b"-7,\"b, \"\"q\"\"\",\n".to_vec()];
    let mut decoder = super::csv::CsvDecoder::new(schema);
    assert!(run(&mut decoder, &seeds, 0xc5f) >= values_to_run());
}

#[test]
fn frame_parser_takes_any_bytes() {
    let mut rng = Rng(0xf00d);
    for _ in 0..values_to_run() * 10 {
        let value = mutate(&mut rng, &[0, 0, 0, 0, 42, 1, 2, 3]);
        match framing::parse(&value) {
            Ok(frame) => {
                assert!(value.len() >= framing::HEADER_LEN && value[0] == framing::MAGIC);
                assert_eq!(frame.body, &value[framing::HEADER_LEN..]);
            }
            Err(why) => assert!(!why.is_empty()),
        }
    }
}

#[test]
fn protobuf_decoder_takes_any_bytes() {
    use prost_reflect::prost::Message;
    use prost_reflect::{DynamicMessage, MapKey, Value};
    let text = r#"syntax = "proto3";
        import "google/protobuf/timestamp.proto";
        message R {
          int64 id = 1;
          optional string name = 2;
          repeated string tags = 3;
          map<string, double> attrs = 4;
          enum K { A = 0; B = 1; }
          K kind = 5;
          oneof o { string s = 6; I inner = 7; }
          message I { sint32 x = 1; google.protobuf.Timestamp at = 2; }
        }"#;
    let registered = RegisteredSchema {
        id: Some(1),
        version: Some(1),
        schema_type: SchemaType::Protobuf,
        schema: text.into(),
        references: Vec::new(),
    };
    let file =
        futures::executor::block_on(super::protobuf::schema::compile(None, &registered)).unwrap();
    let format = ProtobufFormat::new(&file, None, None)
        .unwrap()
        .with_writer(1, file.clone());
    let r = file.messages().next().unwrap();
    let mut full = DynamicMessage::new(r.clone());
    full.set_field_by_name("id", Value::I64(-3));
    full.set_field_by_name("name", Value::String("ab".into()));
    full.set_field_by_name("tags", Value::List(vec![Value::String("x".into())]));
    full.set_field_by_name(
        "attrs",
        Value::Map([(MapKey::String("k".into()), Value::F64(1.0))].into()),
    );
    full.set_field_by_name("kind", Value::EnumNumber(1));
    let mut inner = DynamicMessage::new(r.child_messages().find(|m| m.name() == "I").unwrap());
    inner.set_field_by_name("x", Value::I32(7));
    full.set_field_by_name("inner", Value::Message(inner));
    let frame = |path: &[u8], message: &DynamicMessage| {
        [&[0, 0, 0, 0, 1][..], path, &message.encode_to_vec()].concat()
    };
    let seeds = vec![
        frame(&[0], &DynamicMessage::new(r.clone())),
        frame(&[0], &full),
        frame(&[2, 0], &full),
        frame(&[4, 0, 2], &full),
    ];
    let mut decoder = ProtobufDecoder::new(Arc::new(format));
    assert!(run(&mut decoder, &seeds, 0xbeef) >= values_to_run());
}

#[test]
fn index_path_parser_takes_any_bytes() {
    let mut rng = Rng(0x1dea);
    for _ in 0..values_to_run() * 10 {
        let value = mutate(&mut rng, &[4, 2, 0x80, 0x01, 8, 1]);
        match index_path(&value) {
            Ok((path, rest)) => {
                assert!(!path.is_empty() && path.iter().all(|&i| i >= 0));
                assert!(rest.len() < value.len(), "the path takes at least a byte");
            }
            Err(why) => assert!(!why.is_empty()),
        }
    }
}

#[test]
fn protobuf_fast_path_reads_as_the_general_route() {
    use prost_reflect::prost::Message;
    use prost_reflect::{DynamicMessage, Value};
    let compile = |text: &str| {
        let registered = RegisteredSchema {
            id: None,
            version: None,
            schema_type: SchemaType::Protobuf,
            schema: text.into(),
            references: Vec::new(),
        };
        futures::executor::block_on(super::protobuf::schema::compile(None, &registered)).unwrap()
    };
    // The writer has a field the table lacks (`extra`), the table one the
    // writer lacks (`later`), and `a` widens from int32 to BIGINT.
    let scalars = "uint32 c = 3; uint64 d = 4; sint32 e = 5; sint64 f = 6; fixed32 g = 7;
        fixed64 h = 8; sfixed32 i = 9; sfixed64 j = 10; float k = 11; double l = 12; bool m = 13;
        string n = 14; bytes o = 15; E p = 16; optional string q = 17; optional int32 r = 18;";
    let writer = compile(&format!(
        "syntax = \"proto3\"; enum E {{ X = 0; Y = 1; }}
         message F {{ int32 a = 1; int64 b = 2; {scalars} string extra = 19; }}"
    ));
    let table = compile(&format!(
        "syntax = \"proto3\"; enum E {{ X = 0; Y = 1; }}
         message F {{ int64 a = 1; int64 b = 2; {scalars} string later = 20; }}"
    ));
    let format = Arc::new(
        ProtobufFormat::new(&table, None, None)
            .unwrap()
            .with_writer(1, writer.clone()),
    );
    let f = writer.messages().next().unwrap();
    let mut full = DynamicMessage::new(f.clone());
    for (name, value) in [
        ("a", Value::I32(-5)),
        ("b", Value::I64(i64::MIN)),
        ("c", Value::U32(u32::MAX)),
        ("d", Value::U64(u64::MAX)),
        ("e", Value::I32(-7)),
        ("f", Value::I64(-9)),
        ("g", Value::U32(7)),
        ("h", Value::U64(8)),
        ("i", Value::I32(-1)),
        ("j", Value::I64(-2)),
        ("k", Value::F32(1.5)),
        ("l", Value::F64(-2.5)),
        ("m", Value::Bool(true)),
        ("n", Value::String("é".into())),
        ("o", Value::Bytes(vec![0, 0xff].into())),
        ("p", Value::EnumNumber(1)),
        ("q", Value::String("q".into())),
        ("r", Value::I32(0)),
        ("extra", Value::String("x".into())),
    ] {
        full.set_field_by_name(name, value);
    }
    let frame =
        |message: &DynamicMessage| [&[0, 0, 0, 0, 1, 0][..], &message.encode_to_vec()].concat();
    let seeds = [frame(&DynamicMessage::new(f)), frame(&full)];
    let mut fast = ProtobufDecoder::new(Arc::clone(&format));
    let mut general = ProtobufDecoder::new(format).without_fast_path();
    let mut rng = Rng(0xfa57);
    let mut done = 0;
    while done < values_to_run() {
        let batch: Vec<Option<Vec<u8>>> = (0..=rng.below(64))
            .map(|_| {
                let seed = &seeds[rng.below(seeds.len())];
                (rng.below(50) != 0).then(|| {
                    if rng.below(3) == 0 {
                        seed.clone()
                    } else {
                        // Mutate the message, not the frame.
                        [&seed[..6], &mutate(&mut rng, &seed[6..])].concat()
                    }
                })
            })
            .collect();
        for value in &batch {
            fast.append(value.as_deref());
            general.append(value.as_deref());
        }
        let (a, b) = (fast.finish().unwrap(), general.finish().unwrap());
        let (ea, eb) = (a.errors.as_string::<i32>(), b.errors.as_string::<i32>());
        for (row, value) in batch.iter().enumerate() {
            let shown = |e: &datafusion::arrow::array::StringArray| {
                e.is_valid(row).then(|| e.value(row).to_string())
            };
            assert_eq!(shown(ea), shown(eb), "{value:?}");
        }
        assert_eq!(a.undecoded.as_ref(), b.undecoded.as_ref());
        for (x, y) in a.columns.iter().zip(&b.columns) {
            assert_eq!(x.as_ref(), y.as_ref(), "{batch:?}");
        }
        done += batch.len();
    }
}
