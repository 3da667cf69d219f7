use super::*;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;

const READING: &str = r#"{"type": "record", "name": "Reading", "fields": [
    {"name": "id", "type": "long"},
    {"name": "name", "type": "string"}]}"#;

fn long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn datum(id: i64, name: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    long(id, &mut out);
    long(name.len() as i64, &mut out);
    out.extend_from_slice(name);
    out
}

fn decode(format: AvroFormat, values: &[Option<Vec<u8>>]) -> DecodedValues {
    let mut decoder = AvroDecoder::new(Arc::new(format));
    for value in values {
        decoder.append(value.as_deref());
    }
    decoder.finish().unwrap()
}

#[test]
fn plain_values_decode_and_each_bad_one_is_a_row_of_its_own() {
    let mut trailing = datum(5, b"x");
    trailing.push(0x02);
    let values = vec![
        Some(datum(1, b"a")),
        Some(datum(9, b"truncated")[..4].to_vec()),
        Some(datum(2, "é".as_bytes())),
        None,
        Some(trailing),
        Some(datum(6, &[0xff, 0xfe])), // not UTF-8: found only when the batch is built
        Some(datum(3, b"c")),
    ];
    let decoded = decode(AvroFormat::plain(READING).unwrap(), &values);
    let ids: Vec<Option<i64>> = decoded.columns[0]
        .as_primitive::<Int64Type>()
        .iter()
        .collect();
    assert_eq!(
        ids,
        [Some(1), None, Some(2), None, None, None, Some(3)],
        "{:?}",
        decoded.errors
    );
    let names = decoded.columns[1].as_string::<i32>();
    assert_eq!((names.value(0), names.value(2)), ("a", "é"));
    let errors = decoded.errors.as_string::<i32>();
    for row in [1, 4, 5] {
        assert!(
            errors.value(row).starts_with("invalid Avro"),
            "{row}: {errors:?}"
        );
    }
    assert!(errors.is_null(3), "a tombstone is nulls without an error");
    let undecoded = decoded.undecoded.as_binary::<i32>();
    for (row, value) in values.iter().enumerate() {
        let kept = errors.is_valid(row).then(|| value.as_deref().unwrap());
        assert_eq!(undecoded.is_valid(row).then(|| undecoded.value(row)), kept);
    }
}

#[test]
fn stray_bytes_after_a_datum_are_that_value_s_error_and_shift_nothing() {
    // Alone, a datum followed by a header-shaped tail would decode; fed
    // together, the tail would swallow the next value as its body.
    let mut stray = datum(1, b"a");
    stray.extend_from_slice(&[0, 0, 0, 0, 0]);
    let values = vec![Some(stray), Some(datum(2, b"b")), Some(datum(3, b"c"))];
    let decoded = decode(AvroFormat::plain(READING).unwrap(), &values);
    let ids: Vec<Option<i64>> = decoded.columns[0]
        .as_primitive::<Int64Type>()
        .iter()
        .collect();
    assert_eq!(ids, [None, Some(2), Some(3)]);
    let errors = decoded.errors.as_string::<i32>();
    assert!(
        errors.value(0).contains("bytes after the datum"),
        "{errors:?}"
    );
}

#[test]
fn a_record_with_no_fields_is_refused() {
    let empty = r#"{"type": "record", "name": "T", "fields": [
        {"name": "e", "type": {"type": "record", "name": "E", "fields": []}}]}"#;
    assert!(AvroFormat::plain(empty).unwrap_err().contains("no fields"));
}

#[test]
fn a_misfit_among_thousands_costs_only_itself() {
    let mut values: Vec<Option<Vec<u8>>> = (0..5000).map(|i| Some(datum(i, b"name"))).collect();
    values[1234] = Some(vec![0x80]); // an unterminated varint
    let decoded = decode(AvroFormat::plain(READING).unwrap(), &values);
    let ids = decoded.columns[0].as_primitive::<Int64Type>();
    assert_eq!(ids.null_count(), 1);
    assert!(ids.is_null(1234) && ids.value(4999) == 4999);
    assert_eq!(decoded.errors.len() - decoded.errors.null_count(), 1);
}

#[test]
fn columns_take_the_types_both_tiers_store() {
    let schema = r#"{"type": "record", "name": "T", "fields": [
        {"name": "status", "type": {"type": "enum", "name": "S", "symbols": ["A", "B"]}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "clock", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "hash", "type": {"type": "fixed", "name": "H", "size": 4}},
        {"name": "tags", "type": {"type": "array", "items": {"type": "enum", "name": "Tag", "symbols": ["X"]}}},
        {"name": "maybe", "type": ["null", "int"], "default": null}]}"#;
    let format = AvroFormat::plain(schema).unwrap();
    let types: Vec<String> = format
        .value_schema()
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "Utf8",
            "Timestamp(µs, \"UTC\")",
            "Timestamp(µs)",
            "Utf8",
            "Decimal128(9, 3)",
            "Date32",
            "Int64",
            "Binary",
            "List(non-null Utf8)",
            "Int32",
        ]
    );
    assert!(
        format
            .value_schema()
            .fields()
            .iter()
            .all(|f| f.is_nullable())
    );

    // A value of that schema converts to exactly those types.
    let mut value = vec![2]; // enum index 1: "B"
    long(1_700_000_000_123, &mut value);
    long(5, &mut value);
    let uuid = "00000000-0000-0000-0000-000000000001";
    long(uuid.len() as i64, &mut value);
    value.extend_from_slice(uuid.as_bytes());
    value.extend_from_slice(&[4, 0x30, 0x39]); // 12345 as two big-endian bytes: 12.345
    long(3, &mut value);
    long(1_000, &mut value);
    value.extend_from_slice(b"abcd");
    value.extend_from_slice(&[2, 0, 0]); // one enum item, then the end of the array
    value.extend_from_slice(&[2, 14]); // union branch 1: int 7
    let decoded = decode(format, &[Some(value)]);
    assert!(decoded.errors.is_null(0), "{:?}", decoded.errors);
    assert_eq!(decoded.columns[0].as_string::<i32>().value(0), "B");
    let at =
        decoded.columns[1].as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
    assert_eq!(at.value(0), 1_700_000_000_123_000);
    assert_eq!(decoded.columns[3].as_string::<i32>().value(0), uuid);
    assert_eq!(
        decoded.columns[6].as_primitive::<Int64Type>().value(0),
        1_000_000
    );
    assert_eq!(decoded.columns[7].as_binary::<i32>().value(0), b"abcd");
}

#[test]
fn schemas_that_cannot_be_tables_are_refused_with_the_reason() {
    let reserved =
        r#"{"type": "record", "name": "R", "fields": [{"name": "_offset", "type": "long"}]}"#;
    assert!(
        AvroFormat::plain(reserved)
            .unwrap_err()
            .contains("reserved")
    );
    assert!(AvroFormat::plain(r#""long""#).is_err());
    assert!(AvroFormat::plain("{not json").is_err());
    let union =
        r#"{"type": "record", "name": "U", "fields": [{"name": "u", "type": ["int", "string"]}]}"#;
    assert!(AvroFormat::plain(union).unwrap_err().contains("field 'u'"));
}
