//! Bad input gets a clear error with the right gRPC code.

use std::time::{Duration, Instant};

use tonic::Code;

use crate::support::{Gateway, unique};

#[tokio::test(flavor = "multi_thread")]
async fn malformed_sql_is_invalid_argument_with_the_parser_message() {
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let err = client.query("SELEC 1").await.expect_err("bad SQL");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("SELEC"), "{}", err.message());
    assert!(!err.message().contains("backtrace"), "{}", err.message());
    assert!(
        !err.message().contains("ParserError("),
        "the message, not a debug dump: {}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_refused() {
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let err = client
        .query("CREATE TABLE t AS SELECT 1")
        .await
        .expect_err("DDL is not allowed");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_is_down_is_unavailable_within_the_deadline() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = Gateway::start_with(None, format!("127.0.0.1:{port}")).await;
    let mut client = gateway.client().await;
    let started = Instant::now();
    let err = client
        .query(&format!("SELECT * FROM \"{}\"", unique("any")))
        .await
        .expect_err("broker is down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        !err.message().contains(&port.to_string()),
        "broker addresses are for the log, not the caller: {}",
        err.message()
    );
    assert!(
        err.message().contains("Broker transport failure")
            && !err.message().contains("BrokerTransportFailure"),
        "librdkafka's words without its enum names: {}",
        err.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_kafka_property_stops_the_gateway_with_its_name() {
    let stderr = crate::support::refused_start(&["--kafka-property", "no.such.property=1"]).await;
    assert!(stderr.contains("no.such.property"), "{stderr}");
}
