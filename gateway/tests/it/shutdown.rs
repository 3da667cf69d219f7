//! SIGTERM: the gateway stops being ready at once and refuses new queries
//! with Unavailable; a running query finishes (within --shutdown-grace) or
//! is stopped with a status naming the grace; a stream ends with a status
//! saying the gateway is shutting down; the process exits 0.

use std::time::Duration;

use futures::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{DEADLINE, Gateway, TestRecord, create_topic, health_status, produce, unique};

fn terminate(gateway: &Gateway) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &gateway.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

async fn health(addr: &str) -> ServingStatus {
    health_status(addr, "").await.expect("health answers")
}

async fn wait_for_health(addr: &str, wanted: ServingStatus) {
    tokio::time::timeout(DEADLINE, async {
        while health(addr).await != wanted {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("health never {wanted:?}"));
}

/// Rows of a generated series long enough to be running after its first
/// batch (the client has not read the rest).
const LONG: i64 = 2_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_running_query_finishes_and_a_new_one_is_refused() {
    let mut gateway = Gateway::start_with_args(None, &["--shutdown-grace", "60s"]).await;
    wait_for_health(&gateway.addr, ServingStatus::Serving).await;
    let mut client = gateway.client().await;
    let mut running = client
        .stream(&format!("SELECT value FROM generate_series(1, {LONG})"))
        .await
        .expect("starts");
    let first = running.next().await.expect("a batch").expect("no error");
    let mut rows = first.num_rows() as i64;
    assert!(rows < LONG, "the query is still running");

    terminate(&gateway);
    wait_for_health(&gateway.addr, ServingStatus::NotServing).await;
    let refused = gateway
        .client()
        .await
        .query("SELECT 1")
        .await
        .expect_err("no new queries");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    assert!(refused.message().contains("shutting down"), "{refused}");

    while let Some(batch) = running.next().await {
        rows += batch.expect("the running query is not stopped").num_rows() as i64;
    }
    assert_eq!(rows, LONG, "every row of the running query");
    drop(running);
    drop(client);
    let exit = gateway.wait().await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_end_at_once_and_queries_past_the_grace_are_stopped() {
    let topic = unique("shutdown");
    create_topic(&topic, 1).await;
    produce(&topic, &[TestRecord::value(0, "before")]).await;
    let mut gateway = Gateway::start_with_args(None, &["--shutdown-grace", "1s"]).await;
    wait_for_health(&gateway.addr, ServingStatus::Serving).await;
    let mut client = gateway.client().await;
    let mut tail = client
        .stream(&format!("SELECT _offset FROM tail('{topic}', 'earliest')"))
        .await
        .expect("the stream starts");
    let first = tail.next().await.expect("a batch").expect("no error");
    assert_eq!(first.num_rows(), 1);
    // Far more rows than can be read within the grace.
    let mut endless = gateway
        .client()
        .await
        .stream("SELECT value FROM generate_series(1, 100000000000)")
        .await
        .expect("starts");
    endless.next().await.expect("a batch").expect("no error");

    terminate(&gateway);
    let ended = tokio::time::timeout(DEADLINE, tail.next())
        .await
        .expect("the stream ends at once")
        .expect("an item")
        .expect_err("a status");
    let ended = match ended {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => panic!("{other}"),
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended}");
    assert!(ended.message().contains("shutting down"), "{ended}");

    let stopped = tokio::time::timeout(DEADLINE, async {
        while let Some(item) = endless.next().await {
            if let Err(e) = item {
                return e;
            }
        }
        panic!("the endless query ended without an error");
    })
    .await
    .expect("stopped after the grace");
    let stopped = match stopped {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => panic!("{other}"),
    };
    assert_eq!(stopped.code(), Code::Unavailable, "{stopped}");
    assert!(stopped.message().contains("--shutdown-grace"), "{stopped}");
    drop((tail, endless, client));
    let exit = gateway.wait().await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}
