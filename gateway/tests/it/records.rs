//! Every record comes back exactly once, with the right metadata and fields.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};

use crate::support::{Gateway, TestRecord, create_topic, now_ms, produce, unique};

const PARTITIONS: i32 = 3;

/// What a record's value is, and what the JSON table should make of it.
#[derive(Debug, Clone)]
enum Value {
    Order {
        id: i64,
        customer: String,
        amount: f64,
    },
    Invalid(&'static str),
    WrongType,
    Tombstone,
}

fn test_records(now_ms: i64) -> Vec<(TestRecord, Value)> {
    (0..90)
        .map(|i: i64| {
            let value = match i {
                i if i % 15 == 7 => Value::Tombstone,
                i if i % 10 == 3 => Value::Invalid("{not json"),
                i if i % 23 == 5 => Value::WrongType,
                i => Value::Order {
                    id: i,
                    customer: if i % 4 == 0 { format!("élève ☃ 北京 {i}") } else { format!("c{i}") },
                    amount: i as f64 * 1.5,
                },
            };
            let bytes = match &value {
                Value::Order { id, customer, amount } => Some(
                    serde_json::json!({"id": id, "customer": customer, "amount": amount, "extra": [1]})
                        .to_string()
                        .into_bytes(),
                ),
                Value::Invalid(text) => Some(text.as_bytes().to_vec()),
                Value::WrongType => Some(br#"{"id": "not a number", "customer": "x"}"#.to_vec()),
                Value::Tombstone => None,
            };
            let mut headers = vec![("seq".to_string(), Some(i.to_string().into_bytes()))];
            if i % 5 == 0 {
                headers.push(("dup".into(), Some(b"a".to_vec())));
                headers.push(("dup".into(), None));
            }
            let record = TestRecord {
                partition: (i % PARTITIONS as i64) as i32,
                key: (i % 6 != 1).then(|| format!("key-{i}").into_bytes()),
                value: bytes,
                timestamp_ms: now_ms - 100_000 + i * 1000,
                headers,
            };
            (record, value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_record_comes_back_once_with_metadata_and_decoded_fields() {
    let topic = unique("records");
    create_topic(&topic, PARTITIONS).await;
    let now_ms = now_ms();
    let records = test_records(now_ms);
    let produced: Vec<TestRecord> = records.iter().map(|(r, _)| r.clone()).collect();
    let offsets = produce(&topic, &produced).await;

    let config = format!(
        r#"
        [[tables]]
        name = "orders_json"
        topic = "{topic}"
        format = "json"
        columns = "id BIGINT, customer VARCHAR, amount DOUBLE"
        "#
    );
    let gateway = Gateway::start(Some(&config)).await;
    let mut client = gateway.client().await;

    // The declared table: decoded fields, errors, tombstones.
    let result = client
        .query(
            "SELECT _partition, _offset, _timestamp, _key, _headers, id, customer, amount, _error \
             FROM orders_json ORDER BY _partition, _offset",
        )
        .await
        .expect("query");
    assert_eq!(
        result.info_schema, *result.stream_schema,
        "FlightInfo schema == stream schema"
    );
    let batch = result.batch();
    assert_eq!(batch.num_rows(), records.len(), "every record exactly once");

    let mut expected: Vec<(usize, i64)> = offsets.iter().copied().enumerate().collect();
    expected.sort_by_key(|&(i, offset)| (produced[i].partition, offset));

    let partitions = batch.column(0).as_primitive::<Int32Type>();
    let got_offsets = batch.column(1).as_primitive::<Int64Type>();
    let timestamps = batch.column(2).as_primitive::<TimestampMicrosecondType>();
    let keys = batch.column(3).as_binary::<i32>();
    let headers = batch.column(4).as_list::<i32>();
    let ids = batch.column(5).as_primitive::<Int64Type>();
    let customers = batch.column(6).as_string::<i32>();
    let amounts = batch.column(7).as_primitive::<Float64Type>();
    let errors = batch.column(8).as_string::<i32>();
    assert_eq!(
        batch.schema().field(2).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );

    for (row, &(i, offset)) in expected.iter().enumerate() {
        let (record, value) = &records[i];
        assert_eq!(partitions.value(row), record.partition, "row {row}");
        assert_eq!(got_offsets.value(row), offset, "row {row}");
        assert_eq!(
            timestamps.value(row),
            record.timestamp_ms * 1000,
            "row {row}"
        );
        match &record.key {
            Some(key) => assert_eq!(keys.value(row), key.as_slice(), "row {row}"),
            None => assert!(keys.is_null(row), "row {row}"),
        }
        let h = headers.value(row);
        let h = h.as_struct();
        let names = h.column(0).as_string::<i32>();
        let values = h.column(1).as_binary::<i32>();
        assert_eq!(h.len(), record.headers.len(), "row {row} headers");
        for (j, (name, value)) in record.headers.iter().enumerate() {
            assert_eq!(names.value(j), name);
            match value {
                Some(v) => assert_eq!(values.value(j), v.as_slice()),
                None => assert!(values.is_null(j)),
            }
        }
        match value {
            Value::Order {
                id,
                customer,
                amount,
            } => {
                assert!(errors.is_null(row), "row {row}: {}", errors.value(row));
                assert_eq!(ids.value(row), *id);
                assert_eq!(customers.value(row), customer);
                assert_eq!(amounts.value(row), *amount);
            }
            Value::Tombstone => {
                assert!(errors.is_null(row) && ids.is_null(row) && customers.is_null(row));
            }
            Value::Invalid(_) => {
                assert!(
                    errors.value(row).contains("invalid JSON"),
                    "{}",
                    errors.value(row)
                );
                assert!(ids.is_null(row) && customers.is_null(row) && amounts.is_null(row));
            }
            Value::WrongType => {
                assert!(
                    errors.value(row).contains("not a number"),
                    "{}",
                    errors.value(row)
                );
                assert!(ids.is_null(row) && customers.is_null(row));
            }
        }
    }

    // The same topic, undeclared, is a raw table (its name needs quoting).
    let raw = client
        .query(&format!(
            "SELECT _partition, _offset, _value FROM \"{topic}\""
        ))
        .await
        .expect("raw query");
    assert_eq!(raw.info_schema, *raw.stream_schema);
    assert_eq!(raw.rows(), records.len());
    let raw = raw.batch();
    let values = raw.column(2).as_binary::<i32>();
    let raw_offsets = raw.column(1).as_primitive::<Int64Type>();
    let raw_partitions = raw.column(0).as_primitive::<Int32Type>();
    for row in 0..raw.num_rows() {
        let i = (0..records.len())
            .find(|&i| {
                offsets[i] == raw_offsets.value(row)
                    && produced[i].partition == raw_partitions.value(row)
            })
            .expect("row maps to a produced record");
        match &produced[i].value {
            Some(v) => assert_eq!(values.value(row), v.as_slice()),
            None => assert!(values.is_null(row)),
        }
    }

    // Aggregates run over the decoded columns.
    let sum = client
        .query("SELECT count(*) AS n, count(_error) AS bad FROM orders_json")
        .await
        .expect("aggregate");
    let sum = sum.batch();
    let bad = records
        .iter()
        .filter(|(_, v)| matches!(v, Value::Invalid(_) | Value::WrongType))
        .count() as i64;
    assert_eq!(
        sum.column(0).as_primitive::<Int64Type>().value(0),
        records.len() as i64
    );
    assert_eq!(sum.column(1).as_primitive::<Int64Type>().value(0), bad);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_topic_is_an_empty_table_with_its_schema() {
    let topic = unique("empty");
    create_topic(&topic, 2).await;
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let result = client
        .query(&format!("SELECT * FROM \"{topic}\""))
        .await
        .expect("query");
    assert_eq!(result.rows(), 0);
    let names: Vec<&str> = result
        .info_schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "_partition",
            "_offset",
            "_timestamp",
            "_key",
            "_value",
            "_headers"
        ]
    );
    assert!(!result.info_schema.field(0).is_nullable());
    assert!(!result.info_schema.field(1).is_nullable());
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_batches_of_every_codec_are_read() {
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = unique(codec);
        create_topic(&topic, 1).await;
        let records: Vec<TestRecord> = (0..50)
            .map(|i| TestRecord::value(0, format!("{codec} {i} {}", "x".repeat(100))))
            .collect();
        crate::support::produce_with(&topic, &records, &[("compression.type", codec)]).await;
        let result = client
            .query(&format!("SELECT _value FROM \"{topic}\" ORDER BY _offset"))
            .await
            .unwrap_or_else(|e| panic!("{codec}: {e}"));
        let batch = result.batch();
        assert_eq!(batch.num_rows(), 50, "{codec}");
        let values = batch.column(0).as_binary::<i32>();
        assert!(
            values
                .value(49)
                .starts_with(format!("{codec} 49").as_bytes()),
            "{codec}"
        );
    }
}
