//! A query that loses a gateway it runs on fails, naming the gateway.
//!
//! datafusion-distributed passes on a broken call between gateways as the
//! transport's own error ("h2 protocol error", "broken pipe"), which says
//! neither that another gateway was involved nor which. The coordinator's
//! plan is wrapped here: such an error asks the other gateways for their
//! health at once and becomes [`ClusterError::LostGateways`] naming those that
//! no longer answer (`Unavailable`). The query still fails as a whole: the
//! rows already sent are never completed from elsewhere, and the client sees
//! an error, never an answer that looks complete.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

use super::members::Membership;
use crate::wrapped::{OutputChange, Wrapped};

/// Why a query over several gateways failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Gateways running part of the query stopped answering.
    #[error(
        "the query lost {} it ran on ({}), which no longer answers; it was stopped with no \
         answer (retry: the next queries run on the gateways that remain): {cause}",
        if .down.len() == 1 { "a gateway" } else { "gateways" },
        .down.join(", ")
    )]
    LostGateways { down: Vec<String>, cause: String },
    /// Another gateway refused the caller this one sent with the query's
    /// tasks: the gateways do not share `--token-secret` or the users file.
    #[error(
        "another gateway of the cluster refused the caller this gateway sent with the query's \
         tasks (do all gateways share --token-secret and the users file?); the query was stopped \
         with no answer: {0}"
    )]
    Refused(String),
    /// A call to another gateway failed, though each still answers.
    #[error(
        "a call between the gateways running the query failed; it was stopped with no answer: {0}"
    )]
    Call(String),
}

/// Whether `err` is a failed call between gateways: the transport's status,
/// or that status as another gateway's task saw it (datafusion-distributed
/// forwards it as a generic error carrying the status's text).
fn is_call_failure(err: &DataFusionError) -> bool {
    match err.find_root() {
        DataFusionError::External(inner) => {
            inner.is::<tonic::Status>() || inner.to_string().starts_with("code: '")
        }
        _ => false,
    }
}

/// `plan`, its failed calls between gateways named (see the module).
pub fn naming_lost_gateways(
    plan: Arc<dyn ExecutionPlan>,
    membership: Membership,
) -> Arc<dyn ExecutionPlan> {
    Arc::new(Wrapped::new(plan, NameLostGateways(membership)))
}

/// Turns a distributed plan's failed calls into [`ClusterError`]s.
#[derive(Debug, Clone)]
struct NameLostGateways(Membership);

impl OutputChange for NameLostGateways {
    fn execute(
        &self,
        inner: &Arc<dyn ExecutionPlan>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let inner = inner.execute(partition, context)?;
        let schema = inner.schema();
        let membership = self.0.clone();
        let named = inner.then(move |item| {
            let membership = membership.clone();
            async move {
                match item {
                    Err(err) if is_call_failure(&err) => Err(name_lost(&membership, &err).await),
                    other => other,
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, named)))
    }
}

/// The text tonic gives a status refusing the caller (as another gateway's
/// task forwards it, `code: '<this>'`).
const UNAUTHENTICATED: &str = "The request does not have valid authentication credentials";
const PERMISSION_DENIED: &str =
    "The caller does not have permission to execute the specified operation";

/// Whether `cause` is another gateway refusing the caller.
fn is_refusal(root: &DataFusionError) -> bool {
    let DataFusionError::External(inner) = root else {
        return false;
    };
    if let Some(status) = inner.downcast_ref::<tonic::Status>() {
        return matches!(
            status.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        );
    }
    let text = inner.to_string();
    text.starts_with(&format!("code: '{UNAUTHENTICATED}'"))
        || text.starts_with(&format!("code: '{PERMISSION_DENIED}'"))
}

/// `err`, a failed call between gateways, with the gateways that no longer
/// answer named.
async fn name_lost(membership: &Membership, err: &DataFusionError) -> DataFusionError {
    let cause = err.find_root().to_string();
    if is_refusal(err.find_root()) {
        return DataFusionError::External(Box::new(ClusterError::Refused(cause)));
    }
    let down = membership.check().await;
    let error = if down.is_empty() {
        ClusterError::Call(cause)
    } else {
        ClusterError::LostGateways {
            down: down.iter().map(|url| url.to_string()).collect(),
            cause,
        }
    };
    DataFusionError::External(Box::new(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn external(err: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
        DataFusionError::External(Box::new(err))
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Forwarded(String);

    #[test]
    fn a_refused_caller_is_told_from_a_broken_call() {
        let refused = tonic::Status::unauthenticated("unknown or expired token: sign in again");
        assert!(is_refusal(&external(refused)));
        assert!(is_refusal(&external(Forwarded(format!(
            "code: '{UNAUTHENTICATED}', message: \"unknown or expired token\""
        )))));
        assert!(is_refusal(&external(tonic::Status::permission_denied(
            "no"
        ))));
        assert!(!is_refusal(&external(tonic::Status::unavailable("down"))));
        assert!(!is_refusal(&external(Forwarded(
            "code: 'Unknown error', message: \"h2 protocol error\"".into()
        ))));
    }
}
