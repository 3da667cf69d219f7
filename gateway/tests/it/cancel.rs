//! A client that stops reading releases the gateway's Kafka readers.

use std::time::Instant;

use futures::StreamExt;

use crate::support::{DEADLINE, Gateway, TestRecord, create_topic, produce_with, unique};

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_stream_stops_its_readers() {
    let topic = unique("cancel");
    create_topic(&topic, 2).await;
    // Far more than the two batches the reader may buffer per partition group.
    let records: Vec<TestRecord> = (0..40_000)
        .map(|i| TestRecord::value(i % 2, vec![b'x'; 64]))
        .collect();
    produce_with(
        &topic,
        &records,
        &[("linger.ms", "50"), ("enable.idempotence", "false")],
    )
    .await;

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let mut stream = client
        .stream(&format!("SELECT * FROM \"{topic}\""))
        .await
        .expect("query starts");
    let first = stream.next().await.expect("a batch").expect("no error");
    assert!(first.num_rows() > 0);
    assert!(
        !gateway.scan_threads().is_empty(),
        "readers are still running while the client holds the stream"
    );

    drop(stream);
    let started = Instant::now();
    while !gateway.scan_threads().is_empty() {
        assert!(
            started.elapsed() < DEADLINE,
            "readers still running: {:?}",
            gateway.scan_threads()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
