//! Limits that keep one client from taking the gateway down: how many
//! queries run at once (more wait in a queue, then are refused), how long
//! one may run, and how long its SQL may be. Memory is limited by the
//! shared DataFusion pool (`--memory-limit`); streams by `--max-streams`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::Stream;

use crate::stop::{QueryStop, stop_after};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Why a query was stopped or refused by a limit.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitError {
    /// Every query slot stayed busy for the whole queue wait.
    #[error(
        "too many queries: {running} are running (--max-concurrent-queries) and none finished \
         within {waited:?}; try again later"
    )]
    Busy {
        /// The limit.
        running: usize,
        /// How long the query waited.
        waited: Duration,
    },
    /// The query ran longer than `--query-timeout`.
    #[error("the query ran longer than {0:?} (--query-timeout) and was stopped")]
    Timeout(Duration),
    /// The gateway is shutting down and takes no new query.
    #[error(
        "the gateway is shutting down and takes no new queries; run the query again \
         (another gateway takes it)"
    )]
    ShuttingDown,
    /// The query was still running when the shutdown grace ran out.
    #[error(
        "the gateway is shutting down: the query was still running after {0:?} \
         (--shutdown-grace) and was stopped; run it again"
    )]
    ShutdownGraceOver(Duration),
    /// A stream (`tail`) ended because the gateway is shutting down.
    #[error(
        "the gateway is shutting down: the stream was ended; start it again \
         (another gateway takes it)"
    )]
    StreamShutDown,
    /// The SQL text is longer than `--max-sql-bytes`.
    #[error("the SQL text is {len} bytes, more than the {max} allowed (--max-sql-bytes)")]
    SqlTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The gateway's limits, shared by every call.
#[derive(Debug, Clone)]
pub struct Limits {
    slots: Arc<Semaphore>,
    max_queries: usize,
    queue_wait: Duration,
    timeout: Option<Duration>,
    max_sql_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(64, Duration::from_secs(30), None, 1024 * 1024)
    }
}

impl Limits {
    /// At most `max_queries` running, a query waiting `queue_wait` for a slot,
    /// running at most `timeout`, with at most `max_sql_bytes` of SQL.
    pub fn new(
        max_queries: usize,
        queue_wait: Duration,
        timeout: Option<Duration>,
        max_sql_bytes: usize,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_queries.max(1))),
            max_queries: max_queries.max(1),
            queue_wait,
            timeout,
            max_sql_bytes,
        }
    }

    /// The longest SQL taken, in bytes.
    pub fn max_sql_bytes(&self) -> usize {
        self.max_sql_bytes
    }

    /// Refuses SQL longer than the limit.
    pub fn check_sql(&self, sql: &str) -> Result<(), LimitError> {
        if sql.len() > self.max_sql_bytes {
            return Err(LimitError::SqlTooLong {
                len: sql.len(),
                max: self.max_sql_bytes,
            });
        }
        Ok(())
    }

    /// A slot for one query, waiting in line for at most the queue wait.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, LimitError> {
        let slot = Arc::clone(&self.slots).acquire_owned();
        match tokio::time::timeout(self.queue_wait, slot).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(LimitError::Busy {
                running: self.max_queries,
                waited: self.queue_wait,
            }),
        }
    }

    /// `stream`, holding `slot` until it ends or is dropped, and stopped with
    /// [`LimitError::Timeout`] once the query has run its time.
    pub fn bound(
        &self,
        stream: SendableRecordBatchStream,
        slot: OwnedSemaphorePermit,
        stop: &Arc<QueryStop>,
    ) -> SendableRecordBatchStream {
        // The deadline also trips the query's stop, from a clock that runs
        // even while the query keeps every runtime worker busy.
        if let Some(limit) = self.timeout {
            stop_after(stop, limit);
        }
        Box::pin(Bounded {
            schema: stream.schema(),
            inner: Some(stream),
            deadline: self
                .timeout
                .map(|t| (t, Box::pin(tokio::time::sleep_until(Instant::now() + t)))),
            _slot: slot,
        })
    }
}

/// A query's stream under its limits.
struct Bounded {
    schema: SchemaRef,
    /// `None` once it has ended (by itself or by the deadline).
    inner: Option<SendableRecordBatchStream>,
    deadline: Option<(Duration, Pin<Box<Sleep>>)>,
    _slot: OwnedSemaphorePermit,
}

impl Stream for Bounded {
    type Item = datafusion::error::Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(item) = inner.as_mut().poll_next(cx) {
            if item.is_none() {
                self.inner = None;
            }
            return Poll::Ready(item);
        }
        if let Some((limit, sleep)) = self.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            let limit = *limit;
            // Dropping the plan stops its work (and its Kafka consumers).
            self.inner = None;
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(
                LimitError::Timeout(limit),
            )))));
        }
        Poll::Pending
    }
}

impl RecordBatchStream for Bounded {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::StreamExt;

    fn never_ending() -> SendableRecordBatchStream {
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::empty());
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::pending(),
        ))
    }

    #[tokio::test]
    async fn a_query_past_its_time_is_stopped_and_frees_its_slot() {
        let limits = Limits::new(
            1,
            Duration::from_millis(20),
            Some(Duration::from_millis(30)),
            10,
        );
        let slot = limits.admit().await.unwrap();
        assert!(
            matches!(limits.admit().await, Err(LimitError::Busy { .. })),
            "one slot"
        );
        let stop = QueryStop::new();
        let mut stream = limits.bound(never_ending(), slot, &stop);
        let stopped = stream.next().await.unwrap().unwrap_err();
        assert!(stopped.to_string().contains("--query-timeout"), "{stopped}");
        assert!(stream.next().await.is_none());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            stop.reason(),
            Some(crate::stop::StopReason::Timeout(Duration::from_millis(30))),
            "the timer trips the stop too"
        );
        drop(stream);
        let _slot = limits.admit().await.expect("the slot is free again");
    }

    #[test]
    fn long_sql_is_refused() {
        let limits = Limits::new(1, Duration::ZERO, None, 10);
        assert!(limits.check_sql("SELECT 1").is_ok());
        assert!(matches!(
            limits.check_sql("SELECT 1234567"),
            Err(LimitError::SqlTooLong { len: 14, max: 10 })
        ));
    }
}
