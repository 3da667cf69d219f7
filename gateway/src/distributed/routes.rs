//! Which gateway ran each task of a distributed query, for `EXPLAIN
//! ANALYZE`.
//!
//! datafusion-distributed assigns a stage's tasks to gateways as it starts
//! the stage and keeps the assignment to itself. The coordinator therefore
//! routes them here as the library would (a stage of one task on the
//! coordinator, which datafusion-distributed's own routing then does; a
//! larger stage round-robin over the gateways that answer, from a random
//! first one) and records where each task went. `EXPLAIN ANALYZE` of a
//! distributed query ends with a row naming, for each stage, the gateway of
//! each task.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use arrow::array::{RecordBatch, StringArray};
use arrow::compute::concat_batches;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion_distributed::{RouteTasksEvent, RouteTasksEventResponse};
use futures::StreamExt;
use url::Url;

use super::members::Membership;
use crate::wrapped::{OutputChange, Wrapped};

/// The plan type of the row `EXPLAIN ANALYZE` adds.
pub const TASKS_ROW: &str = "Tasks by gateway";

/// Where the tasks of one query's stages went, in the order the stages
/// started: a `SessionConfig` extension of the query.
#[derive(Debug, Default, Clone)]
pub struct TaskRoutes(Arc<Mutex<Vec<Routed>>>);

/// One stage's tasks: its head node (as `EXPLAIN` shows it) and each
/// task's gateway.
#[derive(Debug, Clone)]
struct Routed {
    head: String,
    gateways: Vec<Url>,
}

impl TaskRoutes {
    fn record(&self, plan: &Arc<dyn ExecutionPlan>, gateways: Vec<Url>) {
        let head = displayable(plan.as_ref()).one_line().to_string();
        self.0.lock().expect("routes poisoned").push(Routed {
            head: head.trim_end().to_string(),
            gateways,
        });
    }

    /// One line per stage: `Stage N: t0=http://…, t1=…`, the stage named by
    /// the number `plan` (the `EXPLAIN ANALYZE` text) gives the stage with
    /// that head, else by its head.
    pub fn describe(&self, plan: &str) -> String {
        let stages = stage_heads(plan);
        let mut used = vec![false; stages.len()];
        let mut out = String::new();
        for routed in self.0.lock().expect("routes poisoned").iter() {
            let found = stages
                .iter()
                .enumerate()
                .find(|(i, (_, head))| !used[*i] && head.starts_with(&routed.head));
            let name = match found {
                Some((i, (number, _))) => {
                    used[i] = true;
                    format!("Stage {number}")
                }
                None => format!("Stage of {}", routed.head),
            };
            let tasks: Vec<String> = routed
                .gateways
                .iter()
                .enumerate()
                .map(|(t, url)| format!("t{t}={url}"))
                .collect();
            let _ = writeln!(out, "{name}: {}", tasks.join(", "));
        }
        out
    }
}

/// Each stage of an `EXPLAIN ANALYZE` text: its number and its first plan
/// line (its head, with the metrics after it).
fn stage_heads(plan: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = plan.lines().collect();
    let mut stages = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.split_once("── Stage ").map(|(_, rest)| rest) else {
            continue;
        };
        let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Some(head) = lines.get(i + 1) {
            let head = head.trim_start_matches(|c: char| c == '│' || c.is_whitespace());
            stages.push((number, head.to_string()));
        }
    }
    stages
}

/// Routes a stage's tasks and records where (see the module).
pub fn route_tasks(
    membership: Membership,
) -> impl for<'a> Fn(RouteTasksEvent<'a>) -> Option<Result<RouteTasksEventResponse>>
+ Send
+ Sync
+ 'static {
    move |ev| {
        let routes = ev.task_ctx.session_config().get_extension::<TaskRoutes>()?;
        if ev.task_count == 1 {
            // datafusion-distributed's own routing runs it on the
            // coordinator, which is a worker too.
            routes.record(ev.plan, vec![membership.self_url().clone()]);
            return None;
        }
        let live = membership.live();
        let first = rand::random_range(0..live.len().max(1));
        let gateways: Vec<Url> = (0..ev.task_count)
            .filter_map(|t| live.get((first + t) % live.len().max(1)).cloned())
            .collect();
        routes.record(ev.plan, gateways.clone());
        Some(Ok(RouteTasksEventResponse::new(gateways)))
    }
}

/// `plan` (a distributed `EXPLAIN ANALYZE`) with the row naming each task's
/// gateway added to its answer.
pub fn naming_task_gateways(
    plan: Arc<dyn ExecutionPlan>,
    routes: TaskRoutes,
) -> Arc<dyn ExecutionPlan> {
    Arc::new(Wrapped::new(plan, AddTaskRoutes(routes)))
}

#[derive(Debug, Clone)]
struct AddTaskRoutes(TaskRoutes);

impl OutputChange for AddTaskRoutes {
    fn execute(
        &self,
        inner: &Arc<dyn ExecutionPlan>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = inner.execute(partition, context)?;
        let schema = stream.schema();
        let routes = self.0.clone();
        let added = stream.map(move |batch| {
            let batch = batch?;
            let plan = batch
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .map(|plans| plans.value(0).to_string())
                .unwrap_or_default();
            let row = RecordBatch::try_new(
                batch.schema(),
                vec![
                    Arc::new(StringArray::from(vec![TASKS_ROW])),
                    Arc::new(StringArray::from(vec![routes.describe(&plan)])),
                ],
            )?;
            Ok(concat_batches(&batch.schema(), [&batch, &row])?)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, added)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stage_is_named_by_the_number_of_the_stage_with_its_head() {
        let plan = "\
┌───── DistributedExec ── local_coordinator_channels=2
│ [Stage 2] => NetworkCoalesceExec: output_partitions=6, input_tasks=3
└──────────
  ┌───── Stage 2 ── tasks=3, partitions=2
  │ AggregateExec: mode=FinalPartitioned, gby=[k], metrics=[output_rows=3]
  │   [Stage 1] => NetworkShuffleExec: output_partitions=2, input_tasks=3
  └──────────
    ┌───── Stage 1 ── tasks=3, partitions=6
    │ RepartitionExec: partitioning=Hash([k], 6), metrics=[output_rows=9]
    └──────────";
        let routed = |head: &str, urls: &[&str]| Routed {
            head: head.to_string(),
            gateways: urls.iter().map(|u| Url::parse(u).unwrap()).collect(),
        };
        let routes = TaskRoutes(Arc::new(Mutex::new(vec![
            routed(
                "RepartitionExec: partitioning=Hash([k], 6)",
                &["http://a:1", "http://b:2", "http://c:3"],
            ),
            routed(
                "AggregateExec: mode=FinalPartitioned, gby=[k]",
                &["http://b:2", "http://c:3", "http://a:1"],
            ),
            routed("SortExec: unknown", &["http://a:1"]),
        ])));
        assert_eq!(
            routes.describe(plan),
            "Stage 1: t0=http://a:1/, t1=http://b:2/, t2=http://c:3/\n\
             Stage 2: t0=http://b:2/, t1=http://c:3/, t2=http://a:1/\n\
             Stage of SortExec: unknown: t0=http://a:1/\n"
        );
    }
}
