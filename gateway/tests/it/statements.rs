//! Prepared statements and the one-schema rule (no view types reach a client).

use arrow::datatypes::DataType;
use arrow_flight::sql::client::FlightSqlServiceClient;
use tonic::transport::Channel;

use crate::support::{Gateway, TestRecord, create_topic, produce, unique};

#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_and_view_types_keep_one_schema() {
    let topic = unique("prepared");
    create_topic(&topic, 2).await;
    let records: Vec<TestRecord> = (0..4)
        .map(|i| TestRecord {
            key: Some(vec![i as u8]),
            ..TestRecord::value(i % 2, format!("{{\"name\": \"n{i}\"}}"))
        })
        .collect();
    produce(&topic, &records).await;
    let config = format!(
        "[[tables]]\nname = \"people\"\ntopic = \"{topic}\"\nformat = \"json\"\ncolumns = \"name VARCHAR\"\n"
    );
    let gateway = Gateway::start(Some(&config)).await;

    // A query that makes DataFusion produce view types on purpose.
    let sql = "SELECT arrow_cast(name, 'Utf8View') AS v, arrow_cast(_key, 'BinaryView') AS k, \
               _offset FROM people ORDER BY _partition, _offset";

    let channel = Channel::from_shared(format!("http://{}", gateway.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut sql_client = FlightSqlServiceClient::new(channel);
    let mut prepared = sql_client
        .prepare(sql.to_string(), None)
        .await
        .expect("prepare");
    let dataset_schema = prepared.dataset_schema().unwrap().clone();
    assert_eq!(dataset_schema.field(0).data_type(), &DataType::Utf8);
    assert_eq!(dataset_schema.field(1).data_type(), &DataType::Binary);
    assert!(!dataset_schema.field(2).is_nullable());
    let info = prepared.execute().await.expect("execute prepared");
    prepared.close().await.expect("close");

    let mut client = gateway.client().await;
    let result = client.fetch(info).await.expect("fetch prepared");
    assert_eq!(result.info_schema, dataset_schema);
    assert_eq!(*result.stream_schema, dataset_schema);
    assert_eq!(result.rows(), 4);

    let direct = client.query(sql).await.expect("statement query");
    assert_eq!(direct.info_schema, dataset_schema);
    assert_eq!(*direct.stream_schema, dataset_schema);
}

/// Types arrow-flight's encoder rewrites in the stream (a large list is sent
/// as a list) are announced the same way in FlightInfo.
#[tokio::test(flavor = "multi_thread")]
async fn large_lists_keep_one_schema() {
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let result = client
        .query("SELECT arrow_cast(make_array(1, 2), 'LargeList(Int64)') AS l")
        .await
        .expect("query");
    assert_eq!(result.info_schema, *result.stream_schema);
    assert!(
        matches!(result.info_schema.field(0).data_type(), DataType::List(_)),
        "{:?}",
        result.info_schema.field(0).data_type()
    );
    assert_eq!(result.rows(), 1);
}
