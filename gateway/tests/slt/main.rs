//! sqllogictest runner: every `tests/slt/*.slt` file runs through a Flight SQL
//! client against the real gateway binary over the real broker.
//!
//! Fixture: one topic with a fixed set of records (fixed timestamps, so
//! results are deterministic; the topic keeps records forever), declared as
//! `orders` (JSON) and `orders_raw` (raw bytes).

#[path = "../it/support.rs"]
mod support;

use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

use support::{Client, Gateway, TestRecord, create_topic, produce, unique};

/// 2024-01-01T00:00:00Z in milliseconds.
const BASE_MS: i64 = 1_704_067_200_000;

fn fixture() -> Vec<TestRecord> {
    let values: [Option<&str>; 10] = [
        Some(r#"{"id": 1, "customer": "ada", "amount": 10.5}"#),
        Some(r#"{"id": 2, "customer": "grace", "amount": 20}"#),
        Some(r#"{"id": 3, "customer": "ada", "amount": 7.25}"#),
        Some(r#"{"id": 4, "customer": "élève ☃", "amount": 1}"#),
        Some("{broken"),
        None,
        Some(r#"{"id": "five", "customer": "linus"}"#),
        Some(r#"{"id": 6, "customer": "grace"}"#),
        Some(r#"{"id": 7, "customer": "ada", "amount": 100, "unknown": [1, 2]}"#),
        Some(r#"{"id": 8, "customer": "barbara", "amount": 3.5}"#),
    ];
    values
        .iter()
        .enumerate()
        .map(|(i, v)| TestRecord {
            partition: (i % 3) as i32,
            key: Some(format!("k{i}").into_bytes()),
            value: v.map(|s| s.as_bytes().to_vec()),
            timestamp_ms: BASE_MS + i as i64 * 60_000,
            headers: vec![("n".into(), Some(i.to_string().into_bytes()))],
        })
        .collect()
}

/// A Flight SQL connection for the runner.
struct FlightSqlDb {
    client: Client,
}

/// A failed statement, shown as `<gRPC code>: <message>` so `.slt` files can
/// match both with `statement error`.
#[derive(Debug)]
struct StatusError(tonic::Status);

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for StatusError {}

#[async_trait]
impl AsyncDB for FlightSqlDb {
    type Error = StatusError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, StatusError> {
        let result = self.client.query(sql).await.map_err(StatusError)?;
        assert_eq!(
            result.info_schema, *result.stream_schema,
            "one schema for {sql}"
        );
        let types = result
            .info_schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let mut rows = Vec::new();
        for batch in &result.batches {
            rows.extend(format_rows(batch));
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "kappa"
    }
}

fn column_type(data_type: &DataType) -> DefaultColumnType {
    match data_type {
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() || matches!(t, DataType::Decimal128(..)) => {
            DefaultColumnType::FloatingPoint
        }
        DataType::Utf8 | DataType::LargeUtf8 => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn format_rows(batch: &RecordBatch) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| match f.value(row).to_string() {
                    s if s.is_empty() => "(empty)".to_string(),
                    s => s,
                })
                .collect()
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let topic = unique("slt-orders");
    create_topic(&topic, 3).await;
    produce(&topic, &fixture()).await;
    let config = format!(
        "[[tables]]\nname = \"orders\"\ntopic = \"{topic}\"\nformat = \"json\"\n\
         columns = \"id BIGINT, customer VARCHAR, amount DOUBLE\"\n\n\
         [[tables]]\nname = \"orders_raw\"\ntopic = \"{topic}\"\nformat = \"raw\"\n"
    );
    let gateway = Gateway::start(Some(&config)).await;

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/slt")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());

    let (mut passed, mut failed) = (0, 0);
    for file in &files {
        let gateway = &gateway;
        let mut runner = Runner::new(|| async move {
            Ok::<_, StatusError>(FlightSqlDb {
                client: gateway.client().await,
            })
        });
        match runner.run_file_async(file).await {
            Ok(()) => {
                passed += 1;
                println!("ok   {}", file.display());
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {}\n{e}", file.display());
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    // `exit` runs no destructors: stop the gateway first.
    drop(gateway);
    if failed > 0 {
        std::process::exit(1);
    }
}
