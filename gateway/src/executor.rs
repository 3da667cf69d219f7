//! Queries run on a runtime of their own, apart from the one serving calls.
//!
//! A CPU-bound operator (a nested-loop join evaluating `md5` for every
//! pair, a sort of a wide table) can hold a worker thread for seconds within
//! one poll. On one runtime, a few such queries take every worker, and the
//! gateway stops answering: no new connection gets its HTTP/2 preface, no
//! cancel is read, health checks time out. So, as InfluxDB 3's dedicated
//! executor does, query execution runs on a second runtime: the serving
//! runtime only plans, encodes and sends, and stays responsive whatever the
//! queries do. The queries still stop promptly when asked (see
//! [`crate::stop`]): that works within an operator, on any runtime.
//!
//! A plan is executed and polled on the query runtime (operators spawn
//! their tasks on the runtime that executes or first polls them), and its
//! batches cross to the caller through a small channel. Dropping the stream
//! the caller holds ends the task that polls the plan, and with it the plan.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use futures::{Stream, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Batches buffered between the query runtime and the caller.
const IN_FLIGHT: usize = 2;

/// Where queries execute.
#[derive(Debug, Clone, Default)]
pub struct QueryExecutor {
    /// The query runtime; `None`: the caller's own.
    runtime: Option<Handle>,
}

impl QueryExecutor {
    /// Queries execute on the caller's runtime (tests, embedding).
    pub fn on_caller() -> Self {
        Self::default()
    }

    /// Queries execute on `runtime`, which the caller keeps running.
    pub fn on(runtime: Handle) -> Self {
        Self {
            runtime: Some(runtime),
        }
    }

    /// `plan`'s batches (all of its partitions, merged), computed on the
    /// query runtime.
    pub fn execute(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let Some(runtime) = &self.runtime else {
            return execute_stream(plan, task);
        };
        let schema = plan.schema();
        // Executing spawns some operators' tasks: on the query runtime.
        let mut batches = {
            let _on_query_runtime = runtime.enter();
            execute_stream(plan, task)?
        };
        let (sender, receiver) = mpsc::channel(IN_FLIGHT);
        let polling = runtime.spawn(async move {
            loop {
                let next = tokio::select! {
                    // The caller went away: stop computing.
                    () = sender.closed() => return,
                    next = batches.next() => next,
                };
                let Some(next) = next else { return };
                let failed = next.is_err();
                if sender.send(next).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Box::pin(Forwarded {
            schema,
            receiver,
            polling,
        }))
    }
}

/// The caller's side of a plan polled on the query runtime.
struct Forwarded {
    schema: SchemaRef,
    receiver: mpsc::Receiver<DfResult<RecordBatch>>,
    polling: JoinHandle<()>,
}

impl Stream for Forwarded {
    type Item = DfResult<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

impl RecordBatchStream for Forwarded {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl Drop for Forwarded {
    fn drop(&mut self) {
        // The plan is dropped at the task's next await, not left to run.
        self.polling.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    fn query_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kappa-query")
            .enable_all()
            .build()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_plan_runs_on_the_query_runtime_and_its_batches_reach_the_caller() {
        let runtime = query_runtime();
        let executor = QueryExecutor::on(runtime.handle().clone());
        let ctx = SessionContext::new();
        let df = ctx
            .sql("SELECT count(*) AS n FROM generate_series(1, 100000)")
            .await
            .unwrap();
        let task = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await.unwrap();
        let batches: Vec<RecordBatch> = executor
            .execute(plan, task)
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
            .await;
        let n = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(n, 100_000);
        runtime.shutdown_background();
    }
}
