//! librdkafka's in-memory mock cluster as a broker for throughput and
//! latency benchmarks (the test broker would be the bottleneck): creates the
//! topics (the mock does not take CreateTopics requests), prints the
//! bootstrap address and serves until stdin closes.
//!
//!     cargo run --release -p kappa-catalog --example mock_cluster -- TOPIC PARTITIONS [TOPIC PARTITIONS]...
//!
//! The mock keeps at most 5 MB or 100,000 records per partition (see
//! `docs/testbed.md`); spread benchmark records over enough partitions.

use std::io::{Read, Write};

use rdkafka::mocking::MockCluster;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: mock_cluster TOPIC PARTITIONS [TOPIC PARTITIONS]...";
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err(USAGE.into());
    }
    let cluster = MockCluster::new(1)?;
    for pair in args.chunks(2) {
        let partitions: i32 = pair[1].parse().map_err(|_| USAGE)?;
        cluster.create_topic(&pair[0], partitions, 1)?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", cluster.bootstrap_servers())?;
    stdout.flush()?;
    // Serve until whoever started us closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(cluster);
    Ok(())
}
