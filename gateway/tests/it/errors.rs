//! Bad input gets a clear error with the right gRPC code.

use std::time::{Duration, Instant};

use arrow_flight::Action;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, CommandStatementQuery, ProstMessageExt,
};
use prost::Message;
use tonic::{Code, Status};

use crate::support::{Client, Gateway, TestRecord, create_topic, produce, unique};

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

/// GetFlightInfo for `sql`: the error planning it gives.
async fn planning_error(client: &mut Client, sql: &str) -> Status {
    client
        .flight_info(CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        })
        .await
        .expect_err(sql)
}

/// CreatePreparedStatement for `sql`: the error preparing it gives.
async fn preparing_error(client: &mut Client, sql: &str) -> Status {
    let create = Action {
        r#type: "CreatePreparedStatement".into(),
        body: ActionCreatePreparedStatementRequest {
            query: sql.into(),
            transaction_id: None,
        }
        .as_any()
        .encode_to_vec()
        .into(),
    };
    match client.inner.do_action(create).await {
        Err(status) => status,
        Ok(results) => match results.into_inner().message().await {
            Err(status) => status,
            Ok(_) => panic!("{sql} was prepared"),
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_table_is_not_found_when_planned_however_it_is_named() {
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let name = unique("nope").replace('-', "_");
    for sql in [
        format!("SELECT * FROM {name}"),
        format!("SELECT * FROM \"{name}\""),
        format!("SELECT * FROM tail('{name}')"),
        format!("SELECT * FROM tail('{name}', 'earliest') WHERE _offset > 3"),
        format!("DESCRIBE {name}"),
        format!("SELECT count(*) FROM {name} JOIN {name} AS b USING (_offset)"),
        format!("SELECT * FROM kafka.default.{name}"),
    ] {
        for err in [
            planning_error(&mut client, &sql).await,
            preparing_error(&mut client, &sql).await,
        ] {
            assert_eq!(err.code(), Code::NotFound, "{sql}: {err:?}");
            assert!(
                err.message().contains(&format!("table '{name}' not found")),
                "{sql}: {}",
                err.message()
            );
            assert!(!err.message().contains("quote"), "{sql}: {}", err.message());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_named_with_a_dot_or_a_dash_is_named_in_quotes_in_the_error() {
    let id = unique("x").replace('-', "_");
    let dotted = format!("payments_{id}.avro");
    let dashed = format!("checkout-events_{id}");
    for topic in [&dotted, &dashed] {
        create_topic(topic, 1).await;
        produce(topic, &[TestRecord::value(0, "v")]).await;
    }
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;

    let err = planning_error(&mut client, &format!("SELECT * FROM {dotted}")).await;
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains(&format!(
            "table '{dotted}' not found; if you meant the topic \"{dotted}\", quote it: FROM \"{dotted}\""
        )),
        "{}",
        err.message()
    );

    for (sql, keyword) in [
        (format!("SELECT * FROM {dashed}"), "FROM"),
        (
            format!("SELECT count(*) FROM {dashed} WHERE _offset >= 0"),
            "FROM",
        ),
        (format!("DESCRIBE {dashed}"), "DESCRIBE"),
        (
            format!("SELECT * FROM \"{dotted}\" AS a JOIN {dashed} AS b USING (_offset)"),
            "JOIN",
        ),
    ] {
        let err = planning_error(&mut client, &sql).await;
        assert!(
            err.message().contains(&format!(
                "topic names with '-' must be quoted: {keyword} \"{dashed}\""
            )),
            "{sql}: {}",
            err.message()
        );
    }

    // Quoted, both are tables.
    for topic in [&dotted, &dashed] {
        let rows = client
            .query(&format!("SELECT * FROM \"{topic}\""))
            .await
            .expect("quoted")
            .rows();
        assert_eq!(rows, 1);
    }

    // No hint where no such topic exists.
    for sql in [
        format!("SELECT * FROM nosuch_{id}.avro"),
        format!("SELECT * FROM nosuch-events_{id}"),
    ] {
        let err = planning_error(&mut client, &sql).await;
        assert!(!err.message().contains("quote"), "{sql}: {}", err.message());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_named_in_the_wrong_case_is_to_be_quoted() {
    let topic = unique("camel");
    create_topic(&topic, 1).await;
    let config = format!(
        "[[tables]]\nname = \"events\"\ntopic = \"{topic}\"\nformat = \"json\"\ncolumns = \"userId BIGINT\"\n"
    );
    let gateway = Gateway::start(Some(&config)).await;
    let mut client = gateway.client().await;
    let err = planning_error(&mut client, "SELECT userId FROM events").await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("quote it as \"userId\""),
        "{}",
        err.message()
    );
    assert!(
        !err.message().contains("enable_ident_normalization"),
        "SET refuses that setting: {}",
        err.message()
    );
}
