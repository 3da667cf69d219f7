//! Kafka's edge cases under range scans, on the test broker: a log start
//! above 0, compaction gaps, LogAppendTime topics, empty and added
//! partitions, records deleted while a query reads them, and the scan's own
//! settings that users cannot override.

use std::time::Instant;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use futures::StreamExt;
use tonic::Code;

use crate::support::{
    DEADLINE, Gateway, TestRecord, add_partitions, create_topic, create_topic_with, delete_records,
    now_ms, produce, unique,
};

async fn count(client: &mut crate::support::Client, sql: &str) -> i64 {
    let result = client
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    result
        .batch()
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_below_the_log_start_are_skipped_and_empty_partitions_end_at_once() {
    let topic = unique("log-start");
    create_topic(&topic, 3).await;
    let records: Vec<TestRecord> = (0..40)
        .map(|i| TestRecord::value(0, format!("{i}")))
        .collect();
    produce(&topic, &records).await;
    delete_records(&topic, 0, 25).await;
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let started = Instant::now();
    assert_eq!(
        count(&mut client, &format!("SELECT count(*) FROM \"{topic}\"")).await,
        15
    );
    assert_eq!(
        count(
            &mut client,
            &format!("SELECT count(*) FROM \"{topic}\" WHERE _offset < 30")
        )
        .await,
        5
    );
    assert_eq!(
        count(
            &mut client,
            &format!("SELECT count(*) FROM \"{topic}\" WHERE _offset < 25")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &mut client,
            &format!("SELECT count(*) FROM \"{topic}\" WHERE _partition = 2")
        )
        .await,
        0
    );
    assert!(
        started.elapsed() < DEADLINE / 3,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_gaps_never_stall_a_scan() {
    let topic = unique("compacted");
    create_topic_with(
        &topic,
        1,
        &[("cleanup.policy", "compact"), ("segment.ms", "100")],
    )
    .await;
    // Ten keys written ten times each: compaction keeps the newest of each.
    let records: Vec<TestRecord> = (0..100)
        .map(|i| TestRecord {
            key: Some(format!("k{}", i % 10).into_bytes()),
            ..TestRecord::value(0, format!("{i}"))
        })
        .collect();
    produce(&topic, &records).await;
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let all = format!("SELECT count(*) FROM \"{topic}\"");
    // Wait until compaction is done (one record per key). A query that
    // races a compaction pass may fail as Aborted: nisshi moves the log
    // start past compacted records (Kafka does not), which kappa cannot
    // tell from retention, so it refuses the answer rather than guess.
    let deadline = Instant::now() + DEADLINE;
    let mut seen = None;
    while Instant::now() < deadline {
        match client.query(&all).await {
            Ok(result) => {
                let n = result
                    .batch()
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .value(0);
                if n == 10 {
                    seen = Some(n);
                    break;
                }
            }
            Err(e) if e.code() == Code::Aborted => {}
            Err(e) => panic!("{all}: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    if seen.is_none() {
        eprintln!("SKIPPED: the test broker did not compact {topic} within {DEADLINE:?}");
        return;
    }
    // Gaps everywhere: ranges, the tail and counts still end, exactly.
    let result = client
        .query(&format!(
            "SELECT _offset FROM \"{topic}\" ORDER BY _offset DESC LIMIT 3"
        ))
        .await
        .expect("last three");
    let newest: Vec<i64> = result
        .batch()
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(newest, vec![99, 98, 97]);
    assert_eq!(
        count(
            &mut client,
            &format!("SELECT count(*) FROM \"{topic}\" WHERE _offset BETWEEN 10 AND 95")
        )
        .await,
        6
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn log_append_time_topics_end_time_ranges_by_offsets_for_times() {
    const RECORDS: i64 = 3000;
    let topic = unique("append-time");
    create_topic_with(&topic, 1, &[("message.timestamp.type", "LogAppendTime")]).await;
    // Produced in three bursts with pauses, so the broker's stamps split them.
    let burst: Vec<TestRecord> = (0..RECORDS / 3)
        .map(|i| TestRecord::value(0, format!("{i}")))
        .collect();
    let mut cut = Vec::new();
    for _ in 0..3 {
        produce(&topic, &burst).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        cut.push(now_ms());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let sql = format!(
        "SELECT count(*) FROM \"{topic}\" WHERE _timestamp < to_timestamp_millis({})",
        cut[0]
    );
    assert_eq!(count(&mut client, &sql).await, RECORDS / 3);
    let plan = client.explain(&format!("EXPLAIN {sql}")).await;
    assert!(
        plan.contains(&format!("ranges=[p0:0..{}]", RECORDS / 3)),
        "the end came from offsets-for-times: {plan}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_added_after_a_query_is_read_by_the_next() {
    let topic = unique("grown");
    create_topic(&topic, 1).await;
    produce(&topic, &[TestRecord::value(0, "a")]).await;
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let sql = format!("SELECT count(*) FROM \"{topic}\"");
    assert_eq!(count(&mut client, &sql).await, 1);
    if let Err(why) = add_partitions(&topic, 3).await {
        eprintln!("SKIPPED: the test broker cannot add partitions to a topic: {why}");
        return;
    }
    produce(
        &topic,
        &[TestRecord::value(2, "b"), TestRecord::value(1, "c")],
    )
    .await;
    assert_eq!(count(&mut client, &sql).await, 3);
    assert_eq!(
        count(&mut client, &format!("{sql} WHERE _partition = 2")).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn records_deleted_while_a_query_reads_them_fail_it_naming_the_offsets() {
    const RECORDS: i64 = 100_000;
    const DELETE_BELOW: i64 = 90_000;
    let topic = unique("vanishing");
    create_topic(&topic, 1).await;
    let records: Vec<TestRecord> = (0..RECORDS)
        .map(|i| TestRecord::value(0, format!("{i:0>64}")))
        .collect();
    crate::support::produce_with(
        &topic,
        &records,
        &[("linger.ms", "50"), ("enable.idempotence", "false")],
    )
    .await;
    // A small prefetch, so the reader is far behind the log when the
    // records are deleted.
    let gateway = Gateway::start_with_args(
        None,
        &[
            "--kafka-property",
            "queued.max.messages.kbytes=64",
            "--kafka-property",
            "max.partition.fetch.bytes=65536",
        ],
    )
    .await;
    let mut client = gateway.client().await;
    let mut stream = client
        .stream(&format!("SELECT _offset, _value FROM \"{topic}\""))
        .await
        .expect("query starts");
    let mut rows = stream
        .next()
        .await
        .expect("a batch")
        .expect("no error")
        .num_rows();
    delete_records(&topic, 0, DELETE_BELOW).await;
    let mut failure = None;
    while let Some(batch) = stream.next().await {
        match batch {
            Ok(batch) => rows += batch.num_rows(),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure =
        failure.unwrap_or_else(|| panic!("a partial answer of {rows} rows looked complete"));
    let message = failure.to_string();
    assert!(message.contains("partition 0: offsets"), "{message}");
    assert!(message.contains(&format!("..{DELETE_BELOW}")), "{message}");
    assert!(
        message.contains("Aborted") || message.contains("aborted"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_cannot_be_a_topic_is_not_found_not_unavailable() {
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let err = client
        .query("SELECT * FROM '/etc/passwd'")
        .await
        .expect_err("no such table");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scans_own_settings_cannot_be_overridden() {
    for property in [
        "isolation.level=read_uncommitted",
        "enable.auto.commit=true",
        "group.id=x",
    ] {
        let stderr = crate::support::refused_start(&["--kafka-property", property]).await;
        let name = property.split('=').next().unwrap();
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_column_names_keep_their_case() {
    let topic = unique("camel");
    create_topic(&topic, 1).await;
    produce(&topic, &[TestRecord::value(0, r#"{"userId": 42}"#)]).await;
    let config = format!(
        "[[tables]]\nname = \"events\"\ntopic = \"{topic}\"\nformat = \"json\"\ncolumns = \"userId BIGINT\"\n"
    );
    let gateway = Gateway::start(Some(&config)).await;
    let mut client = gateway.client().await;
    assert_eq!(
        count(&mut client, "SELECT \"userId\" FROM events").await,
        42
    );
}
