//! Topics are tables as soon as they exist, without a gateway restart.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use tonic::Code;

use crate::support::{Gateway, TestRecord, create_topic, produce, unique};

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_created_after_start_is_queryable_at_once() {
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let topic = unique("late");

    let err = client
        .query(&format!("SELECT count(*) FROM \"{topic}\""))
        .await
        .expect_err("no such topic yet");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains(&topic), "{}", err.message());

    create_topic(&topic, 1).await;
    let records: Vec<TestRecord> = (0..5)
        .map(|i| TestRecord::value(0, format!("v{i}")))
        .collect();
    produce(&topic, &records).await;

    let result = client
        .query(&format!("SELECT count(*) FROM \"{topic}\""))
        .await
        .expect("query the new topic");
    assert_eq!(
        result
            .batch()
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn information_schema_lists_new_topics_after_a_refresh() {
    use arrow::array::Array;

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let topic = unique("listed");
    create_topic(&topic, 1).await;
    let sql = format!(
        "SELECT table_name FROM information_schema.tables \
         WHERE table_catalog = 'kafka' AND table_schema = 'default' AND table_name = '{topic}'"
    );
    // The gateway refreshes its topic list every 3 s by default.
    let started = std::time::Instant::now();
    loop {
        let result = client.query(&sql).await.expect("information_schema query");
        if result.rows() == 1 {
            let batch = result.batch();
            assert_eq!(batch.column(0).as_string::<i32>().value(0), topic);
            assert!(!batch.column(0).is_null(0));
            break;
        }
        assert!(
            started.elapsed() < crate::support::DEADLINE,
            "{topic} never listed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn system_partitions_shows_each_partitions_offsets() {
    use arrow::datatypes::Int32Type;

    let topic = unique("sys");
    create_topic(&topic, 3).await;
    let counts = [2, 0, 5];
    let records: Vec<TestRecord> = counts
        .iter()
        .enumerate()
        .flat_map(|(partition, &n)| (0..n).map(move |_| TestRecord::value(partition as i32, "v")))
        .collect();
    produce(&topic, &records).await;

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let result = client
        .query(&format!(
            "SELECT partition, log_start_offset, high_watermark FROM system.partitions \
             WHERE topic = '{topic}' ORDER BY partition"
        ))
        .await
        .expect("system.partitions");
    assert_eq!(result.info_schema, *result.stream_schema);
    let batch = result.batch();
    let partitions = batch.column(0).as_primitive::<Int32Type>();
    let low = batch.column(1).as_primitive::<Int64Type>();
    let high = batch.column(2).as_primitive::<Int64Type>();
    assert_eq!(partitions.values().to_vec(), vec![0, 1, 2]);
    assert_eq!(low.values().to_vec(), vec![0, 0, 0]);
    assert_eq!(high.values().to_vec(), vec![2, 0, 5]);
}
