//! One more run of a statement whose distributed run failed before its
//! first batch: never a partial answer, since nothing was sent yet.

use std::sync::Arc;

use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::DataFrame;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::statements::execute_stoppable;
use crate::distributed::{Cluster, ClusterError};
use crate::executor::QueryExecutor;
use crate::stop::QueryStop;

/// What runs the statement again.
pub(super) struct Again {
    pub df: DataFrame,
    pub stop: Arc<QueryStop>,
    pub executor: QueryExecutor,
    pub cluster: Arc<Cluster>,
}

impl Again {
    /// `stream`, replaced by a second run if its first item is an error
    /// of the cluster (a lost gateway, a failed call between gateways,
    /// datafusion-distributed's own bookkeeping of the connections).
    pub(super) fn if_it_fails_at_once(
        self,
        stream: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        let schema = stream.schema();
        let retried = futures::stream::once(async move {
            let (head, rest) = stream.into_future().await;
            match head {
                Some(Err(e)) if of_the_cluster(&e) => {
                    tracing::warn!(error = %e, "a distributed query failed as it started: running it once more");
                    match execute_stoppable(
                        self.df,
                        &self.stop,
                        &self.executor,
                        Some(&self.cluster),
                    )
                    .await
                    {
                        Ok(again) => again.boxed(),
                        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                    }
                }
                head => {
                    let stream: BoxStream<'static, _> =
                        futures::stream::iter(head).chain(rest).boxed();
                    stream
                }
            }
        })
        .flatten();
        Box::pin(RecordBatchStreamAdapter::new(schema, retried))
    }
}

/// Whether `e` is the cluster failing rather than the query.
fn of_the_cluster(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError;
    match e.find_root() {
        DataFusionError::External(inner) => inner
            .downcast_ref::<ClusterError>()
            .is_some_and(|c| !matches!(c, ClusterError::Refused(_))),
        DataFusionError::Internal(text) => text.contains("WorkerConnections"),
        _ => false,
    }
}
