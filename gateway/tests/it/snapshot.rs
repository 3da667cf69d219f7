//! A query reads the snapshot its plan fixed: records produced while it
//! streams are not part of it.

use futures::StreamExt;

use crate::support::{Gateway, TestRecord, create_topic, produce_with, unique};

fn records(count: usize) -> Vec<TestRecord> {
    (0..count)
        .map(|i| TestRecord::value((i % 2) as i32, vec![b'y'; 32]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn records_produced_during_a_query_are_not_in_it() {
    // Many batches per partition, so the readers are still reading when
    // more records arrive.
    const BEFORE: usize = 120_000;
    let topic = unique("snapshot");
    create_topic(&topic, 2).await;
    let fast = [("linger.ms", "50"), ("enable.idempotence", "false")];
    produce_with(&topic, &records(BEFORE), &fast).await;

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let mut stream = client
        .stream(&format!("SELECT _partition, _offset FROM \"{topic}\""))
        .await
        .expect("query starts");
    // The plan is fixed once the first batch arrives; the readers are held
    // back by the client (two batches of buffer) while more is produced.
    let mut rows = stream
        .next()
        .await
        .expect("a batch")
        .expect("no error")
        .num_rows();
    produce_with(&topic, &records(5_000), &fast).await;
    while let Some(batch) = stream.next().await {
        rows += batch.expect("no error").num_rows();
    }
    assert_eq!(rows, BEFORE);

    // A new query sees the new records.
    let result = client
        .query(&format!("SELECT count(*) FROM \"{topic}\""))
        .await
        .expect("count");
    let count = result.batch();
    let count = count
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap();
    assert_eq!(count.value(0), (BEFORE + 5_000) as i64);
}
