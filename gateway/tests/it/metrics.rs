//! `/metrics`, `/healthz` and `/readyz` on `--metrics-listen`: a known
//! workload moves each counter by exactly what it should.

use std::collections::HashMap;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::CommandStatementQuery;
use futures::{StreamExt, TryStreamExt};

use crate::support::{DEADLINE, Gateway, TestRecord, create_topic, produce, unique};

/// The samples of an exposition, by series (`name{labels}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    let value = |m: &HashMap<String, f64>| m.get(series).copied().unwrap_or(0.0);
    value(after) - value(before)
}

/// Runs `sql` to its end: the rows and the Flight data bytes received,
/// and the error that ended it, if one did.
async fn run(gateway: &Gateway, sql: &str) -> (usize, u64, Option<tonic::Status>) {
    let mut client = gateway.client().await;
    let info = match client
        .flight_info(CommandStatementQuery {
            query: sql.to_string(),
            transaction_id: None,
        })
        .await
    {
        Ok(info) => info,
        Err(status) => return (0, 0, Some(status)),
    };
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = match client.inner.do_get(ticket).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return (0, 0, Some(status)),
    };
    let (mut data, mut error) = (Vec::new(), None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(message) => data.push(message),
            Err(status) => {
                error = Some(status);
                break;
            }
        }
    }
    let bytes = data
        .iter()
        .map(|d| (d.data_header.len() + d.data_body.len()) as u64)
        .sum();
    let batches: Vec<_> = FlightRecordBatchStream::new_from_flight_data(
        futures::stream::iter(data).map(Ok::<_, FlightError>),
    )
    .try_collect()
    .await
    .expect("decodes");
    (batches.iter().map(|b| b.num_rows()).sum(), bytes, error)
}

async fn ready(gateway: &Gateway) {
    tokio::time::timeout(DEADLINE, async {
        while gateway.http_get("/readyz").await.0 != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("ready in time");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_workload_moves_each_counter_by_what_it_did() {
    let topic = unique("metrics");
    create_topic(&topic, 1).await;
    let records: Vec<_> = (0..5)
        .map(|i| TestRecord::value(0, format!("{i}")))
        .collect();
    produce(&topic, &records).await;
    let gateway = Gateway::start_with_args(None, &["--metrics-listen", "127.0.0.1:0"]).await;
    ready(&gateway).await;
    assert_eq!(gateway.http_get("/healthz").await.0, 200);

    let (code, text) = gateway.http_get("/metrics").await;
    assert_eq!(code, 200);
    let before = samples(&text);

    let mut bytes = 0;
    for (sql, rows) in [
        (format!("SELECT * FROM \"{topic}\""), 5),
        (
            format!("SELECT _offset FROM \"{topic}\" WHERE _offset < 2"),
            2,
        ),
        ("SELECT 1".to_string(), 1),
    ] {
        let (got, sent, error) = run(&gateway, &sql).await;
        assert!(error.is_none(), "{sql}: {error:?}");
        assert_eq!(got, rows, "{sql}");
        bytes += sent;
    }
    // Fails while running (it reads the topic, then divides by zero)…
    let sql = format!("SELECT 1 / (_offset - _offset) FROM \"{topic}\"");
    let (got, sent, error) = run(&gateway, &sql).await;
    let failed = error.expect("division by zero");
    assert!(failed.message().contains("zero"), "{failed}");
    assert_eq!(got, 0);
    bytes += sent;
    // …and fails to plan.
    let (_, _, rejected) = run(&gateway, "SELECT * FROM no_such_table_anywhere").await;
    assert_eq!(
        rejected.expect("unknown table").code(),
        tonic::Code::NotFound
    );

    let after = samples(&gateway.http_get("/metrics").await.1);
    let d = |series: &str| delta(&before, &after, series);
    assert_eq!(d("kappa_queries_total{outcome=\"ok\"}"), 3.0);
    assert_eq!(d("kappa_queries_total{outcome=\"error\"}"), 1.0);
    assert_eq!(d("kappa_queries_total{outcome=\"rejected\"}"), 1.0);
    assert_eq!(d("kappa_queries_total{outcome=\"cancelled\"}"), 0.0);
    assert_eq!(d("kappa_query_duration_seconds_count"), 4.0);
    assert_eq!(d("kappa_rows_sent_total"), 8.0);
    // Every byte of Flight data the clients received.
    assert_eq!(d("kappa_bytes_sent_total"), bytes as f64);
    // 5 + 2 (the range reads offsets 0 and 1 only) + 5.
    assert_eq!(d("kappa_kafka_records_fetched_total"), 12.0);
    assert_eq!(after.get("kappa_queries_active"), Some(&0.0));
    assert_eq!(after.get("kappa_streams_active"), Some(&0.0));
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("kappa_build_info{binary=\"kappa-gateway\"")),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_the_client_drops_is_cancelled_and_no_longer_active() {
    let gateway = Gateway::start_with_args(None, &["--metrics-listen", "127.0.0.1:0"]).await;
    ready(&gateway).await;
    let mut client = gateway.client().await;
    let mut running = client
        .stream("SELECT value FROM generate_series(1, 100000000000)")
        .await
        .expect("starts");
    running.next().await.expect("a batch").expect("no error");
    let during = samples(&gateway.http_get("/metrics").await.1);
    assert_eq!(during.get("kappa_queries_active"), Some(&1.0));
    drop(running);
    drop(client);
    // The gateway learns of the drop when the connection says so: poll.
    let after = tokio::time::timeout(DEADLINE, async {
        loop {
            let now = samples(&gateway.http_get("/metrics").await.1);
            if now.get("kappa_queries_active") == Some(&0.0) {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dropped query ends");
    assert_eq!(after["kappa_queries_total{outcome=\"cancelled\"}"], 1.0);
    assert_eq!(after["kappa_queries_total{outcome=\"ok\"}"], 0.0);
    assert_eq!(after["kappa_query_duration_seconds_count"], 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn not_ready_while_the_brokers_were_never_reached() {
    let gateway = Gateway::launch_with(
        None,
        "127.0.0.1:1".into(),
        &["--metrics-listen", "127.0.0.1:0"],
    )
    .await;
    assert_eq!(gateway.http_get("/healthz").await.0, 200);
    let (code, body) = gateway.http_get("/readyz").await;
    assert_eq!((code, body.trim()), (503, "not ready"));
}
