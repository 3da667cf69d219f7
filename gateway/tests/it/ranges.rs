//! Range scans: filters on `_partition`, `_offset` and `_timestamp`, LIMIT
//! and "the last n records" narrow what is read, and the answer always
//! equals the filter applied to every record.

use std::collections::BTreeSet;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};

use crate::support::{
    Client, Gateway, TestRecord, create_topic, delete_records, now_ms, produce, unique,
};

/// A small deterministic generator (xorshift64*), so a failing case is
/// reproduced from its seed alone.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next() as usize % items.len()]
    }
}

/// One record as the test knows it.
#[derive(Debug, Clone, Copy)]
struct Known {
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
}

#[derive(Debug, Clone, Copy)]
enum Column {
    Partition,
    Offset,
    Timestamp,
}

/// A predicate over the metadata columns: SQL text and its meaning.
#[derive(Debug, Clone)]
enum Pred {
    Cmp(Column, &'static str, i64),
    Between(Column, i64, i64, bool),
    In(Column, Vec<i64>, bool),
    /// `_timestamp <op> t` with `t` in microseconds (sub-millisecond bounds).
    TimestampMicros(&'static str, i64),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

fn value_of(column: Column, r: &Known) -> i64 {
    match column {
        Column::Partition => i64::from(r.partition),
        Column::Offset => r.offset,
        Column::Timestamp => r.timestamp_ms,
    }
}

fn compare(op: &str, a: i128, b: i128) -> bool {
    match op {
        "=" => a == b,
        "<>" => a != b,
        "<" => a < b,
        "<=" => a <= b,
        ">" => a > b,
        ">=" => a >= b,
        _ => unreachable!("{op}"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmm` (UTC) of milliseconds since the epoch.
fn iso(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

impl Pred {
    fn literal(column: Column, v: i64, style: u64) -> String {
        match column {
            Column::Timestamp => match style % 3 {
                0 => format!("to_timestamp_millis({v})"),
                1 => format!("TIMESTAMP '{}'", iso(v)),
                _ => format!("CAST('{}Z' AS TIMESTAMP)", iso(v)),
            },
            _ => v.to_string(),
        }
    }

    fn column_sql(column: Column) -> &'static str {
        match column {
            Column::Partition => "_partition",
            Column::Offset => "_offset",
            Column::Timestamp => "_timestamp",
        }
    }

    fn sql(&self) -> String {
        match self {
            Pred::Cmp(c, op, v) => {
                format!(
                    "{} {op} {}",
                    Self::column_sql(*c),
                    Self::literal(*c, *v, *v as u64)
                )
            }
            Pred::Between(c, lo, hi, negated) => format!(
                "{} {}BETWEEN {} AND {}",
                Self::column_sql(*c),
                if *negated { "NOT " } else { "" },
                Self::literal(*c, *lo, 0),
                Self::literal(*c, *hi, 1)
            ),
            Pred::In(c, values, negated) => format!(
                "{} {}IN ({})",
                Self::column_sql(*c),
                if *negated { "NOT " } else { "" },
                values
                    .iter()
                    .map(|v| Self::literal(*c, *v, 0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Pred::TimestampMicros(op, us) => format!("_timestamp {op} to_timestamp_micros({us})"),
            Pred::And(a, b) => format!("({} AND {})", a.sql(), b.sql()),
            Pred::Or(a, b) => format!("({} OR {})", a.sql(), b.sql()),
            Pred::Not(a) => format!("NOT ({})", a.sql()),
        }
    }

    fn eval(&self, r: &Known) -> bool {
        match self {
            Pred::Cmp(c, op, v) => compare(op, i128::from(value_of(*c, r)), i128::from(*v)),
            Pred::Between(c, lo, hi, negated) => {
                let x = value_of(*c, r);
                (*lo <= x && x <= *hi) != *negated
            }
            Pred::In(c, values, negated) => values.contains(&value_of(*c, r)) != *negated,
            Pred::TimestampMicros(op, us) => {
                compare(op, i128::from(r.timestamp_ms) * 1000, i128::from(*us))
            }
            Pred::And(a, b) => a.eval(r) && b.eval(r),
            Pred::Or(a, b) => a.eval(r) || b.eval(r),
            Pred::Not(a) => !a.eval(r),
        }
    }
}

/// The shape of the generated data, to aim literals around it.
struct Shape {
    partitions: i64,
    max_offset: i64,
    first_ms: i64,
    last_ms: i64,
}

fn random_value(rng: &mut Rng, column: Column, shape: &Shape) -> i64 {
    match column {
        Column::Partition => rng.range(-1, shape.partitions),
        Column::Offset => match rng.range(0, 9) {
            0 => rng.range(-3, -1),
            1 => rng.range(shape.max_offset, shape.max_offset * 1000),
            _ => rng.range(0, shape.max_offset),
        },
        Column::Timestamp => match rng.range(0, 9) {
            0 => shape.first_ms - rng.range(1, 100_000),
            1 => shape.last_ms + rng.range(1, 100_000),
            _ => rng.range(shape.first_ms, shape.last_ms),
        },
    }
}

fn random_pred(rng: &mut Rng, shape: &Shape, depth: u32) -> Pred {
    let leaf = depth == 0 || rng.range(0, 2) == 0;
    if !leaf {
        let a = Box::new(random_pred(rng, shape, depth - 1));
        return match rng.range(0, 4) {
            0 | 1 => Pred::And(a, Box::new(random_pred(rng, shape, depth - 1))),
            2 | 3 => Pred::Or(a, Box::new(random_pred(rng, shape, depth - 1))),
            _ => Pred::Not(a),
        };
    }
    let column = *rng.pick(&[Column::Partition, Column::Offset, Column::Timestamp]);
    let op = *rng.pick(&["=", "<>", "<", "<=", ">", ">="]);
    match rng.range(0, 9) {
        0 => {
            let (a, b) = (
                random_value(rng, column, shape),
                random_value(rng, column, shape),
            );
            Pred::Between(column, a.min(b), a.max(b), rng.range(0, 3) == 0)
        }
        1 => {
            let values = (0..rng.range(1, 4))
                .map(|_| random_value(rng, column, shape))
                .collect();
            Pred::In(column, values, rng.range(0, 3) == 0)
        }
        2 => {
            let ms = random_value(rng, Column::Timestamp, shape);
            Pred::TimestampMicros(op, ms * 1000 + rng.range(-999, 999))
        }
        _ => Pred::Cmp(column, op, random_value(rng, column, shape)),
    }
}

/// `(partition, offset)` pairs of a result's first two columns.
async fn pairs(client: &mut Client, sql: &str, context: &str) -> Vec<(i32, i64)> {
    let result = client
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    let batch = result.batch();
    let partitions = batch.column(0).as_primitive::<Int32Type>();
    let offsets = batch.column(1).as_primitive::<Int64Type>();
    (0..batch.num_rows())
        .map(|i| (partitions.value(i), offsets.value(i)))
        .collect()
}

/// The seed of this run: `KAPPA_TEST_SEED` to replay one, else a new one.
fn seed() -> u64 {
    std::env::var("KAPPA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn random_predicates_return_what_the_filter_selects() {
    const PARTITIONS: i32 = 3;
    const PER_PARTITION: i64 = 50;
    const DELETED: i64 = 8;
    const CASES: usize = 300;
    let seed = seed();
    let mut rng = Rng::new(seed);

    // Out-of-order CreateTime timestamps: each record up to 3 s off a
    // rising clock; partition 0 starts at offset DELETED (DeleteRecords).
    let topic = unique("ranges");
    create_topic(&topic, PARTITIONS).await;
    let base = now_ms() - 600_000;
    let records: Vec<TestRecord> = (0..PER_PARTITION * i64::from(PARTITIONS))
        .map(|i| TestRecord {
            timestamp_ms: base + i * 1000 + rng.range(-3000, 3000),
            ..TestRecord::value((i % i64::from(PARTITIONS)) as i32, format!("v{i}"))
        })
        .collect();
    let offsets = produce(&topic, &records).await;
    delete_records(&topic, 0, DELETED).await;
    let known: Vec<Known> = records
        .iter()
        .zip(&offsets)
        .map(|(r, &offset)| Known {
            partition: r.partition,
            offset,
            timestamp_ms: r.timestamp_ms,
        })
        .filter(|k| k.partition != 0 || k.offset >= DELETED)
        .collect();
    let shape = Shape {
        partitions: i64::from(PARTITIONS),
        max_offset: PER_PARTITION,
        first_ms: known.iter().map(|k| k.timestamp_ms).min().unwrap(),
        last_ms: known.iter().map(|k| k.timestamp_ms).max().unwrap(),
    };

    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    for case in 0..CASES {
        let pred = random_pred(&mut rng, &shape, 3);
        let mut expected: Vec<(i32, i64)> = known
            .iter()
            .filter(|k| pred.eval(k))
            .map(|k| (k.partition, k.offset))
            .collect();
        expected.sort_unstable();
        let context = |sql: &str| format!("seed {seed} case {case}: {sql}");
        let filter = pred.sql();
        match case % 4 {
            // The whole answer.
            0 | 1 => {
                let sql = format!(
                    "SELECT _partition, _offset FROM \"{topic}\" WHERE {filter} ORDER BY 1, 2"
                );
                assert_eq!(
                    pairs(&mut client, &sql, &context(&sql)).await,
                    expected,
                    "{}",
                    context(&sql)
                );
            }
            // The newest k (the last-records path when the filter is exact).
            2 => {
                let k = rng.range(1, 12) as usize;
                let sql = format!(
                    "SELECT _partition, _offset FROM \"{topic}\" WHERE {filter} \
                     ORDER BY _offset DESC, _partition DESC LIMIT {k}"
                );
                let mut newest = expected.clone();
                newest.sort_unstable_by_key(|&(p, o)| std::cmp::Reverse((o, p)));
                newest.truncate(k);
                assert_eq!(
                    pairs(&mut client, &sql, &context(&sql)).await,
                    newest,
                    "{}",
                    context(&sql)
                );
            }
            // Any k rows (LIMIT reaches the scan when the filter is exact).
            _ => {
                let k = rng.range(1, 12) as usize;
                let sql =
                    format!("SELECT _partition, _offset FROM \"{topic}\" WHERE {filter} LIMIT {k}");
                let got = pairs(&mut client, &sql, &context(&sql)).await;
                assert_eq!(got.len(), k.min(expected.len()), "{}", context(&sql));
                let allowed: BTreeSet<_> = expected.iter().collect();
                let distinct: BTreeSet<_> = got.iter().collect();
                assert_eq!(distinct.len(), got.len(), "{}", context(&sql));
                assert!(got.iter().all(|p| allowed.contains(p)), "{}", context(&sql));
            }
        }
    }
}

/// Records fetched by the Kafka scan, from `EXPLAIN ANALYZE` output (exact
/// below 1,000; DataFusion prints larger counts rounded, as `1.23 K`).
fn records_fetched(plan: &str) -> u64 {
    let at = plan
        .find("records_fetched=")
        .unwrap_or_else(|| panic!("no records_fetched in {plan}"));
    let text: String = plan[at + "records_fetched=".len()..]
        .chars()
        .take_while(|c| !matches!(c, ',' | ']'))
        .collect();
    let (number, scale) = match text.trim().split_once(' ') {
        Some((n, "K")) => (n, 1e3),
        Some((n, "M")) => (n, 1e6),
        _ => (text.trim(), 1.0),
    };
    let value: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("{text:?} in {plan}"));
    (value * scale) as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_the_ranges_and_analyze_shows_a_point_read_is_a_handful_of_records() {
    const RECORDS: i64 = 20_000;
    let topic = unique("explain");
    create_topic(&topic, 2).await;
    let records: Vec<TestRecord> = (0..RECORDS)
        .map(|i| TestRecord::value(0, format!("v{i}")))
        .collect();
    produce(&topic, &records).await;
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;

    let plan = client
        .explain(&format!(
            "EXPLAIN SELECT * FROM \"{topic}\" WHERE (_partition = 0 AND _offset BETWEEN 5 AND 9) \
             OR (_partition = 1 AND _offset < 50)"
        ))
        .await;
    assert!(plan.contains("ranges=[p0:5..10]"), "{plan}");
    assert!(plan.contains("filters=[_partition = Int32(0)"), "{plan}");

    let plan = client
        .explain(&format!(
            "EXPLAIN ANALYZE SELECT * FROM \"{topic}\" WHERE _partition = 0 AND _offset = 12345"
        ))
        .await;
    let fetched = records_fetched(&plan);
    assert!((1..=5).contains(&fetched), "fetched {fetched}: {plan}");

    let plan = client
        .explain(&format!(
            "EXPLAIN ANALYZE SELECT _offset FROM \"{topic}\" ORDER BY _offset DESC LIMIT 10"
        ))
        .await;
    assert!(plan.contains("last=10 per partition"), "{plan}");
    let fetched = records_fetched(&plan);
    assert!((10..=20).contains(&fetched), "fetched {fetched}: {plan}");

    // Wholly outside the log: nothing to read, at once.
    let plan = client
        .explain(&format!(
            "EXPLAIN SELECT * FROM \"{topic}\" WHERE _offset > 1000000000"
        ))
        .await;
    assert!(plan.contains("ranges=[]"), "{plan}");
    let rows = client
        .query(&format!("SELECT * FROM \"{topic}\" WHERE _offset < 0"))
        .await
        .expect("query")
        .rows();
    assert_eq!(rows, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn count_star_decodes_no_value_and_a_self_join_sees_one_snapshot() {
    let topic = unique("snapshot-join");
    create_topic(&topic, 2).await;
    let records: Vec<TestRecord> = (0..2000)
        .map(|i| TestRecord::value(i % 2, vec![b'x'; 64]))
        .collect();
    produce(&topic, &records).await;
    let gateway = Gateway::start(None).await;

    // Records keep arriving while the queries are planned.
    let producing = {
        let topic = topic.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                let more: Vec<TestRecord> =
                    (0..200).map(|i| TestRecord::value(i % 2, "y")).collect();
                produce(&topic, &more).await;
            }
        })
    };
    let mut client = gateway.client().await;
    let sql = format!(
        "SELECT a.n - b.n FROM (SELECT count(*) AS n FROM \"{topic}\") a, \
         (SELECT count(*) AS n FROM \"{topic}\") b"
    );
    while !producing.is_finished() {
        let result = client.query(&sql).await.expect("query");
        let batch = result.batch();
        assert_eq!(
            batch.column(0).as_primitive::<Int64Type>().value(0),
            0,
            "{sql}"
        );
    }
    producing.await.unwrap();
    let plan = client
        .explain(&format!("EXPLAIN SELECT count(*) FROM \"{topic}\""))
        .await;
    assert!(plan.contains("KafkaScanExec"), "{plan}");
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_and_keys_stay_right_when_projected_alone() {
    let topic = unique("projection");
    create_topic(&topic, 1).await;
    let record = TestRecord {
        key: Some(b"k".to_vec()),
        headers: vec![("h".into(), Some(b"v".to_vec()))],
        ..TestRecord::value(0, "value")
    };
    produce(&topic, &[record]).await;
    let gateway = Gateway::start(None).await;
    let mut client = gateway.client().await;
    let result = client
        .query(&format!("SELECT _key, _offset FROM \"{topic}\""))
        .await
        .expect("query");
    let batch = result.batch();
    assert_eq!(batch.num_columns(), 2);
    assert_eq!(batch.column(0).as_binary::<i32>().value(0), b"k");
    let result = client
        .query(&format!("SELECT cardinality(_headers) FROM \"{topic}\""))
        .await
        .expect("query");
    assert_eq!(result.batch().column(0).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_timestamp_skew_ends_time_ranges_early_and_stays_exact() {
    const RECORDS: i64 = 900;
    let topic = unique("skew");
    create_topic(&topic, 1).await;
    // Timestamps rise 100 ms a record, each up to 1 s early: never more than
    // 1 s out of order, within the declared 2 s.
    let base = now_ms() - 600_000;
    let mut rng = Rng::new(7);
    let records: Vec<TestRecord> = (0..RECORDS)
        .map(|i| TestRecord {
            timestamp_ms: base + i * 100 - rng.range(0, 1000),
            ..TestRecord::value(0, r#"{"n": 1}"#)
        })
        .collect();
    produce(&topic, &records).await;
    let config = format!(
        "[[tables]]\nname = \"skewed\"\ntopic = \"{topic}\"\nformat = \"json\"\n\
         columns = \"n BIGINT\"\ntimestamp_skew = \"2s\"\n\n\
         [[tables]]\nname = \"unskewed\"\ntopic = \"{topic}\"\nformat = \"json\"\ncolumns = \"n BIGINT\"\n"
    );
    let gateway = Gateway::start(Some(&config)).await;
    let mut client = gateway.client().await;
    for cut in [base + 10_000, base + 45_000, base + 89_000] {
        let expected = records.iter().filter(|r| r.timestamp_ms < cut).count() as i64;
        for table in ["skewed", "unskewed"] {
            let sql = format!(
                "SELECT count(*) FROM {table} WHERE _timestamp < to_timestamp_millis({cut})"
            );
            let result = client.query(&sql).await.expect("count");
            let got = result
                .batch()
                .column(0)
                .as_primitive::<Int64Type>()
                .value(0);
            assert_eq!(got, expected, "{sql}");
        }
        // Skewed: stops at the first record at or after cut + 2 s, about 30
        // records past the cut; unskewed reads to the end.
        let sql = format!(
            "EXPLAIN ANALYZE SELECT count(*) FROM skewed WHERE _timestamp < to_timestamp_millis({cut})"
        );
        let fetched = records_fetched(&client.explain(&sql).await) as i64;
        assert!(
            fetched <= expected + 40 && fetched >= expected,
            "fetched {fetched} for {expected}"
        );
        let sql = sql.replace("skewed", "unskewed");
        assert_eq!(records_fetched(&client.explain(&sql).await) as i64, RECORDS);
    }
}
