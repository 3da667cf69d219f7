//! Clean shutdown, in the order a rolling update needs it.
//!
//! On SIGTERM the gateway stops being ready (the health service and
//! `/readyz` say NOT_SERVING, so load balancers and Kubernetes stop sending
//! it work) and refuses new queries with `Unavailable`, which clients retry
//! elsewhere. Streams (`tail`) never end by themselves, so they are ended at
//! once with a status that says why. Running queries get `--shutdown-grace`
//! to finish; any still running then is stopped (dropping its stream trips
//! its [`crate::stop::QueryStop`], so its operators and Kafka readers stop
//! too) and ends with `Unavailable`. A gateway in a cluster then waits for
//! the tasks it runs for other gateways' queries
//! ([`crate::distributed::WorkerCalls::settle`]). Only then does the server
//! stop.
//!
//! Every query and stream in flight passes through [`Drain::track`], which
//! also keeps the `kappa_queries_active` and `kappa_streams_active` gauges.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::limits::LimitError;
use crate::metrics::GatewayMetrics;

/// The default `--shutdown-grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Where the gateway is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Taking queries.
    Serving,
    /// Shutting down: no new queries, streams ended, queries finishing.
    Draining,
    /// The grace is over: queries still running are stopped.
    Stopping,
}

/// The gateway's phase, and the queries and streams in flight.
#[derive(Debug)]
pub struct Drain {
    phase: watch::Sender<Phase>,
    grace: Duration,
    queries: Gauge,
    streams: Gauge,
}

impl Drain {
    /// Serving, giving queries `grace` to finish at shutdown, counting them
    /// in `metrics`.
    pub fn new(grace: Duration, metrics: &GatewayMetrics) -> Arc<Self> {
        Arc::new(Self {
            phase: watch::Sender::new(Phase::Serving),
            grace,
            queries: metrics.active(false).clone(),
            streams: metrics.active(true).clone(),
        })
    }

    /// Refuses a new query once shutdown has begun.
    pub fn admit(&self) -> Result<(), LimitError> {
        match *self.phase.borrow() {
            Phase::Serving => Ok(()),
            _ => Err(LimitError::ShuttingDown),
        }
    }

    /// `stream`, counted while it lives, and ended with an error when
    /// shutdown reaches it: a stream (`streaming`) at once, a query when the
    /// grace is over.
    pub fn track(
        &self,
        stream: SendableRecordBatchStream,
        streaming: bool,
    ) -> SendableRecordBatchStream {
        let (gauge, ends_at, error) = if streaming {
            (&self.streams, Phase::Draining, LimitError::StreamShutDown)
        } else {
            (
                &self.queries,
                Phase::Stopping,
                LimitError::ShutdownGraceOver(self.grace),
            )
        };
        gauge.inc();
        let mut phase = self.phase.subscribe();
        Box::pin(Tracked {
            schema: stream.schema(),
            inner: Some(stream),
            shutdown: Box::pin(async move {
                // The sender lives as long as the gateway.
                let _ = phase.wait_for(|&p| p >= ends_at).await;
            }),
            error: Some(error),
            _counted: Counted(gauge.clone()),
        })
    }

    /// Shuts down: not ready, no new queries, streams ended; waits up to
    /// the grace for queries to finish, then stops the rest and waits for
    /// them to be gone (a few seconds at most).
    pub async fn shut_down(&self) {
        self.phase.send_replace(Phase::Draining);
        let running = self.queries.get();
        if running > 0 {
            tracing::info!(
                running,
                grace = ?self.grace,
                "shutting down: waiting for running queries"
            );
        }
        if !self.idle_within(self.grace).await {
            tracing::warn!(
                running = self.queries.get(),
                "shutting down: stopping the queries still running after --shutdown-grace"
            );
        }
        self.phase.send_replace(Phase::Stopping);
        // Stopped streams end at their next poll; a client that stopped
        // reading holds its stream until the server closes its connection.
        self.idle_within(Duration::from_secs(5)).await;
    }

    /// Whether every query and stream has ended within `limit`.
    async fn idle_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.queries.get() <= 0 && self.streams.get() <= 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Takes one off a gauge when dropped.
struct Counted(Gauge);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A query's or stream's batches until shutdown reaches it.
struct Tracked {
    schema: SchemaRef,
    /// `None` once ended.
    inner: Option<SendableRecordBatchStream>,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    error: Option<LimitError>,
    _counted: Counted,
}

impl Stream for Tracked {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        if self.shutdown.as_mut().poll(cx).is_ready() {
            // Dropping the plan stops its work and its Kafka readers.
            self.inner = None;
            return Poll::Ready(
                self.error
                    .take()
                    .map(|e| Err(DataFusionError::External(Box::new(e)))),
            );
        }
        let item = self
            .inner
            .as_mut()
            .map(|inner| inner.as_mut().poll_next(cx));
        match item {
            Some(Poll::Ready(None)) => {
                self.inner = None;
                Poll::Ready(None)
            }
            Some(ready) => ready,
            None => Poll::Ready(None),
        }
    }
}

impl RecordBatchStream for Tracked {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::StreamExt;

    fn endless() -> SendableRecordBatchStream {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::pending(),
        ))
    }

    #[tokio::test]
    async fn streams_end_at_once_and_queries_after_the_grace() {
        let metrics = GatewayMetrics::new();
        let drain = Drain::new(Duration::from_millis(50), &metrics);
        let mut query = drain.track(endless(), false);
        let mut stream = drain.track(endless(), true);
        assert_eq!(
            (metrics.active(false).get(), metrics.active(true).get()),
            (1, 1)
        );
        assert!(drain.admit().is_ok());
        let shutting_down = tokio::spawn({
            let drain = Arc::clone(&drain);
            async move { drain.shut_down().await }
        });
        let ended = stream.next().await.unwrap().unwrap_err();
        assert!(ended.to_string().contains("shutting down"), "{ended}");
        assert!(matches!(drain.admit(), Err(LimitError::ShuttingDown)));
        drop(stream);
        let stopped = query.next().await.unwrap().unwrap_err();
        assert!(
            stopped.to_string().contains("--shutdown-grace"),
            "{stopped}"
        );
        assert!(query.next().await.is_none());
        drop(query);
        shutting_down.await.unwrap();
        assert_eq!(
            (metrics.active(false).get(), metrics.active(true).get()),
            (0, 0)
        );
    }
}
