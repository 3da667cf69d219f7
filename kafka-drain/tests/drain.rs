//! The drain against librdkafka's own mock cluster: every record comes back
//! once, in order, with its key, value, timestamp and headers; partition ends
//! and errors come as `BaseConsumer::poll` reports them; and draining mixes
//! with polling on one consumer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kappa_kafka_drain::QueueDrain;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "drained";
const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 500;

/// What a record was produced with.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn sent(partition: i32, offset: i64) -> Sent {
    let n = i64::from(partition) * PER_PARTITION + offset;
    Sent {
        // Every seventh record has no key, every eleventh a null value.
        key: (n % 7 != 0).then(|| format!("k{n}").into_bytes()),
        value: (n % 11 != 0).then(|| format!("{{\"n\":{n}}}").into_bytes()),
        timestamp: 1_700_000_000_000 + n,
        headers: if n % 5 == 0 {
            vec![
                ("trace".into(), Some(format!("t{n}").into_bytes())),
                ("empty".into(), None),
            ]
        } else {
            Vec::new()
        },
    }
}

/// A mock cluster holding `PER_PARTITION` records in each partition.
fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    for partition in 0..PARTITIONS {
        for offset in 0..PER_PARTITION {
            let record = sent(partition, offset);
            let mut headers = OwnedHeaders::new();
            for (name, value) in &record.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: value.as_ref(),
                });
            }
            let mut out = BaseRecord::<Vec<u8>, Vec<u8>>::to(TOPIC)
                .partition(partition)
                .timestamp(record.timestamp)
                .headers(headers);
            if let Some(key) = &record.key {
                out = out.key(key);
            }
            if let Some(value) = &record.value {
                out = out.payload(value);
            }
            producer.send(out).map_err(|(e, _)| e).unwrap();
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    cluster
}

fn consumer(cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "drain-test")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    consumer
}

fn received(record: &kappa_kafka_drain::Record<'_>) -> Sent {
    Sent {
        key: record.key().map(<[u8]>::to_vec),
        value: record.payload().map(<[u8]>::to_vec),
        timestamp: record.timestamp_ms().unwrap(),
        headers: record
            .headers()
            .unwrap()
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.map(<[u8]>::to_vec)))
            .collect(),
    }
}

#[test]
fn every_record_comes_back_once_in_order_with_its_parts() {
    let cluster = cluster();
    let consumer = consumer(&cluster);
    let mut drain = QueueDrain::new(&consumer, 64).unwrap();
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut ended = Vec::new();
    let mut largest_fill = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ended.len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "not drained: {next:?}");
        let taken = drain.fill(Duration::from_millis(100));
        largest_fill = largest_fill.max(taken);
        assert!(taken <= 64);
        for index in 0..drain.len() {
            match drain.get(index) {
                Ok(record) => {
                    assert_eq!(record.topic().to_str(), Ok(TOPIC));
                    let expected = next.entry(record.partition()).or_default();
                    assert_eq!(
                        record.offset(),
                        *expected,
                        "partition {}",
                        record.partition()
                    );
                    assert_eq!(received(&record), sent(record.partition(), record.offset()));
                    *expected += 1;
                }
                Err(KafkaError::PartitionEOF(partition)) => {
                    assert_eq!(next.get(&partition), Some(&PER_PARTITION));
                    ended.push(partition);
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
    }
    ended.sort();
    assert_eq!(ended, (0..PARTITIONS).collect::<Vec<_>>());
    // It took many records per call, not one.
    assert!(largest_fill > 1, "largest fill {largest_fill}");
}

#[test]
fn draining_and_polling_share_one_consumer() {
    let cluster = cluster();
    let consumer = consumer(&cluster);
    let mut seen: HashMap<i32, Vec<i64>> = HashMap::new();
    let mut ended = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut drain = QueueDrain::new(&consumer, 16).unwrap();
    let mut turn = 0usize;
    while ended < PARTITIONS {
        assert!(Instant::now() < deadline);
        turn += 1;
        let mut items: Vec<Result<(i32, i64), KafkaError>> = Vec::new();
        if turn.is_multiple_of(2) {
            drain.fill(Duration::from_millis(50));
            for index in 0..drain.len() {
                items.push(drain.get(index).map(|r| (r.partition(), r.offset())));
            }
        } else if let Some(polled) = consumer.poll(Duration::from_millis(50)) {
            items.push(polled.map(|m| (m.partition(), m.offset())));
        }
        for item in items {
            match item {
                Ok((partition, offset)) => seen.entry(partition).or_default().push(offset),
                Err(KafkaError::PartitionEOF(_)) => ended += 1,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
    }
    for partition in 0..PARTITIONS {
        assert_eq!(
            seen[&partition],
            (0..PER_PARTITION).collect::<Vec<_>>(),
            "partition {partition}"
        );
    }
}

#[test]
fn a_position_outside_the_log_comes_back_as_its_error() {
    let cluster = cluster();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "drain-test")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(TOPIC, 0, Offset::Offset(PER_PARTITION + 1_000))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut drain = QueueDrain::new(&consumer, 8).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no error came");
        drain.fill(Duration::from_millis(100));
        if let Some(error) = (0..drain.len()).find_map(|i| drain.get(i).err()) {
            assert!(
                matches!(
                    error,
                    KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)
                ),
                "{error:?}"
            );
            break;
        }
    }
}

#[test]
fn a_consumer_without_a_group_has_no_queue_to_drain() {
    let cluster = MockCluster::new(1).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    assert!(QueueDrain::new(&consumer, 8).is_none());
}
