//! End-to-end tests: the real broker, the real gateway binary, Flight SQL over the network.

mod cancel;
mod discovery;
mod edges;
mod errors;
mod health;
mod logs;
mod metadata;
mod metrics;
mod params;
mod ranges;
mod records;
mod shutdown;
mod snapshot;
mod startup;
mod statements;
mod support;
