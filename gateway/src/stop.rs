//! Stopping a query's work, wherever it is running.
//!
//! Dropping a query's stream aborts the tasks DataFusion spawned for it, but
//! an abort only lands when the task yields, and CPU-bound operators (a
//! cross join emitting batch after batch from memory, `md5` over each) may
//! not yield for minutes: the client saw `CANCELLED` while a core stayed
//! busy. So every operator of an executed plan is wrapped in
//! [`Stoppable`], a transparent proxy (same name, display, metrics and
//! downcast identity, so EXPLAIN ANALYZE reads as before) whose stream
//! checks the query's [`QueryStop`] before each batch and spends tokio's
//! cooperative budget, so the task yields and aborts land. A cancel, the
//! client going away or `--query-timeout` each trip the stop, and every
//! operator ends at its next batch boundary.
//!
//! One function call building one huge value cannot be interrupted this
//! way; [`crate::bounded_functions`] bounds what such calls may build.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak, mpsc};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion_distributed::DistributedExec;
use futures::Stream;

use crate::limits::LimitError;
use crate::wrapped::{OutputChange, Wrapped};

/// Why a query was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// CancelFlightInfo, or the client closed the stream.
    Cancelled,
    /// `--query-timeout` passed.
    Timeout(Duration),
}

/// One query's stop switch, shared by all of its operators.
#[derive(Debug, Default)]
pub struct QueryStop {
    reason: OnceLock<StopReason>,
}

impl QueryStop {
    /// A switch that is not tripped.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Trips the switch; the first reason given is the one reported.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
    }

    /// Why the query was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }

    /// The error an operator or function reports once the stop tripped.
    pub(crate) fn error(&self) -> Option<DataFusionError> {
        self.reason().map(|reason| match reason {
            StopReason::Cancelled => DataFusionError::Execution("query cancelled".into()),
            StopReason::Timeout(limit) => {
                DataFusionError::External(Box::new(LimitError::Timeout(limit)))
            }
        })
    }
}

/// When a query's time is up, its stop, and its limit.
type Deadline = (Instant, Weak<QueryStop>, Duration);

/// Trips `stop` with [`StopReason::Timeout`] once `limit` has passed.
///
/// The clock is an OS thread, not a tokio timer: a CPU-bound query can
/// keep every runtime worker busy, and then no tokio timer fires.
pub fn stop_after(stop: &Arc<QueryStop>, limit: Duration) {
    static DEADLINES: OnceLock<Mutex<mpsc::Sender<Deadline>>> = OnceLock::new();
    let sender = DEADLINES.get_or_init(|| {
        let (sender, deadlines) = mpsc::channel();
        std::thread::Builder::new()
            .name("kappa-deadlines".into())
            .spawn(move || watch_deadlines(deadlines))
            .expect("a thread for query deadlines");
        Mutex::new(sender)
    });
    let _ = sender.lock().expect("deadline channel poisoned").send((
        Instant::now() + limit,
        Arc::downgrade(stop),
        limit,
    ));
}

/// Trips each query's stop at its deadline (queries that ended are gone
/// from their weak reference and cost nothing).
fn watch_deadlines(deadlines: mpsc::Receiver<Deadline>) {
    let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut stops: HashMap<u64, (Weak<QueryStop>, Duration)> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        let wait = due
            .peek()
            .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()));
        let received = match wait {
            Some(wait) => deadlines.recv_timeout(wait),
            None => deadlines
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok((at, stop, limit)) => {
                due.push(Reverse((at, next_id)));
                stops.insert(next_id, (stop, limit));
                next_id += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        while let Some(Reverse((at, id))) = due.peek().copied()
            && at <= Instant::now()
        {
            due.pop();
            if let Some((stop, limit)) = stops.remove(&id)
                && let Some(stop) = stop.upgrade()
            {
                stop.stop(StopReason::Timeout(limit));
            }
        }
    }
}

/// `plan` with every operator wrapped in [`Stoppable`] under `stop`. A
/// distributed plan is wrapped at its root only: its stages are sent to the
/// gateways that run them (where a wrapper could not travel), and ending its
/// stream ends their tasks.
pub fn stoppable(
    plan: Arc<dyn ExecutionPlan>,
    stop: &Arc<QueryStop>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    if plan.is::<DistributedExec>() {
        return Ok(Arc::new(Stoppable::new(plan, StopOn(Arc::clone(stop)))));
    }
    let children = plan
        .children()
        .into_iter()
        .map(|child| stoppable(Arc::clone(child), stop))
        .collect::<DfResult<Vec<_>>>()?;
    let plan = if children.is_empty() {
        plan
    } else {
        plan.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
        )?
    };
    Ok(Arc::new(Stoppable::new(plan, StopOn(Arc::clone(stop)))))
}

/// An operator whose output stops when its query's [`QueryStop`] trips
/// (see [`crate::wrapped`]).
pub type Stoppable = Wrapped<StopOn>;

/// Ends an operator's output with the stop's error once `0` trips.
#[derive(Debug, Clone)]
pub struct StopOn(Arc<QueryStop>);

impl OutputChange for StopOn {
    fn execute(
        &self,
        inner: &Arc<dyn ExecutionPlan>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if let Some(stopped) = self.0.error() {
            return Err(stopped);
        }
        let inner = inner.execute(partition, context)?;
        Ok(make_cooperative(Box::pin(StopStream {
            schema: inner.schema(),
            inner: Some(inner),
            stop: Arc::clone(&self.0),
        })))
    }
}

/// An operator's output, ending with the stop's error once it trips.
struct StopStream {
    schema: SchemaRef,
    /// `None` once stopped: the operator's state is dropped at once.
    inner: Option<SendableRecordBatchStream>,
    stop: Arc<QueryStop>,
}

impl Stream for StopStream {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.inner.is_none() {
            return Poll::Ready(None);
        }
        if let Some(stopped) = self.stop.error() {
            self.inner = None;
            return Poll::Ready(Some(Err(stopped)));
        }
        match self.inner.as_mut() {
            Some(inner) => inner.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

impl RecordBatchStream for StopStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

/// A query's result stream that trips its stop when it is dropped: the
/// client went away, a cancel ended it, or it finished (then nothing is
/// left to stop).
pub struct StopOnDrop {
    inner: SendableRecordBatchStream,
    stop: Arc<QueryStop>,
}

impl StopOnDrop {
    /// `inner`, tripping `stop` when dropped.
    pub fn new(inner: SendableRecordBatchStream, stop: Arc<QueryStop>) -> Self {
        Self { inner, stop }
    }
}

impl fmt::Debug for StopOnDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopOnDrop")
            .field("stop", &self.stop)
            .finish()
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.stop.stop(StopReason::Cancelled);
    }
}

impl Stream for StopOnDrop {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl RecordBatchStream for StopOnDrop {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}
