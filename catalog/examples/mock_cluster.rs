//! librdkafka's in-memory mock cluster as a broker for throughput
//! benchmarks (the test broker would be the bottleneck): creates a topic,
//! prints the bootstrap address and serves until stdin closes.
//!
//!     cargo run --release -p kappa-catalog --example mock_cluster -- TOPIC PARTITIONS
//!
//! The mock keeps at most 5 MB or 100,000 records per partition (see
//! `docs/testbed.md`); spread benchmark records over enough partitions.

use std::io::{Read, Write};

use rdkafka::mocking::MockCluster;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().ok_or("usage: mock_cluster TOPIC PARTITIONS")?;
    let partitions: i32 = args
        .next()
        .ok_or("usage: mock_cluster TOPIC PARTITIONS")?
        .parse()?;
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(&topic, partitions, 1)?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", cluster.bootstrap_servers())?;
    stdout.flush()?;
    // Serve until whoever started us closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(cluster);
    Ok(())
}
