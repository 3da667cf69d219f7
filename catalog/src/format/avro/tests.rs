use super::*;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int32Type, Int64Type};

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
    let only_null =
        r#"{"type": "record", "name": "U", "fields": [{"name": "u", "type": ["null"]}]}"#;
    assert!(
        AvroFormat::plain(only_null)
            .unwrap_err()
            .contains("field 'u'")
    );
}

#[test]
fn unions_of_several_types_read_as_a_struct_of_one_field_per_type() {
    let schema = r#"{"type": "record", "name": "T", "fields": [
        {"name": "u", "type": ["int", "string"]},
        {"name": "n", "type": ["null", "long",
            {"type": "record", "name": "Point", "namespace": "geo", "fields": [{"name": "x", "type": "int"}]}]},
        {"name": "inner", "type": ["null",
            {"type": "record", "name": "Inner", "fields": [{"name": "v", "type": ["string", "double"]}]}]},
        {"name": "list", "type": {"type": "array", "items": ["long", "boolean"]}}]}"#;
    let format = AvroFormat::plain(schema).unwrap();
    let fields = format.value_schema().fields();
    let names = |t: &DataType| match t {
        DataType::Struct(fields) => fields.iter().map(|f| f.name().clone()).collect::<Vec<_>>(),
        other => panic!("{other}"),
    };
    assert_eq!(names(fields[0].data_type()), ["int", "string"]);
    assert_eq!(names(fields[1].data_type()), ["long", "Point"]);
    let DataType::Struct(inner) = fields[2].data_type() else {
        panic!()
    };
    assert_eq!(names(inner[0].data_type()), ["string", "double"]);

    // u: int 7; n: Point{x: 3}; inner: {v: "a"}; list: [long 5, true]
    let first = vec![0, 14, 4, 6, 2, 0, 2, b'a', 4, 0, 10, 2, 1, 0];
    // u: "hi"; n: null; inner: null; list: []
    let second = vec![2, 4, b'h', b'i', 0, 0, 0];
    let decoded = decode(format, &[Some(first), Some(second)]);
    assert!(decoded.errors.null_count() == 2, "{:?}", decoded.errors);

    let u = decoded.columns[0].as_struct();
    let int = u.column(0).as_primitive::<Int32Type>();
    let text = u.column(1).as_string::<i32>();
    assert_eq!((int.value(0), text.is_null(0)), (7, true));
    assert_eq!((int.is_null(1), text.value(1)), (true, "hi"));
    assert_eq!(
        u.null_count(),
        0,
        "a union with no null branch is never null"
    );

    let n = decoded.columns[1].as_struct();
    assert!(n.is_valid(0) && n.column(0).is_null(0));
    let point = n.column(1).as_struct();
    assert_eq!(point.column(0).as_primitive::<Int32Type>().value(0), 3);
    assert!(n.is_null(1), "the null branch makes the struct null");

    let inner = decoded.columns[2].as_struct();
    let v = inner.column(0).as_struct();
    assert_eq!(v.column(0).as_string::<i32>().value(0), "a");
    assert!(v.column(1).is_null(0));
    assert!(
        inner.is_null(1) && v.is_null(1),
        "a null record's union reads null"
    );

    let list = decoded.columns[3].as_list::<i32>();
    let items = list.value(0);
    let items = items.as_struct();
    assert_eq!(items.column(0).as_primitive::<Int64Type>().value(0), 5);
    assert!(items.column(0).is_null(1));
    assert!(items.column(1).as_boolean().value(1));
    assert_eq!(list.value_length(1), 0);
}

#[test]
fn a_named_type_used_by_name_in_a_union_decodes_as_its_own_branch() {
    // arrow-avro 59 resolves a type used by name as whatever the reader has
    // in its place: without writing uses out, `C` decodes as the `double`
    // (a truncated datum) or the `long` (a wrong number, no error).
    let schema = r#"{"type": "record", "name": "T", "fields": [
        {"name": "first", "type": {"type": "enum", "name": "C", "symbols": ["FR", "DE"]}},
        {"name": "d", "type": ["double", "C"]},
        {"name": "l", "type": ["long", "C"]}]}"#;
    let format = AvroFormat::plain(schema).unwrap();
    let value = vec![0, 2, 2, 2, 0]; // first FR; d: C DE; l: C FR
    let decoded = decode(format, &[Some(value)]);
    assert!(decoded.errors.is_null(0), "{:?}", decoded.errors);
    let d = decoded.columns[1].as_struct();
    assert!(d.column(0).is_null(0));
    assert_eq!(d.column(1).as_string::<i32>().value(0), "DE");
    let l = decoded.columns[2].as_struct();
    assert!(l.column(0).is_null(0), "not read as a long");
    assert_eq!(l.column(1).as_string::<i32>().value(0), "FR");
}
