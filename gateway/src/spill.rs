//! How queries spill to disk past `--memory-limit`, set once for every
//! session.
//!
//! DataFusion 55's `RepartitionExec` writes the batches it cannot hold to a
//! spill pool shared by its input tasks, one per output partition. When two
//! input tasks spill at once the pool holds two open files; the reader drains
//! only the oldest, and once it has read everything written there it waits for
//! that file's writer, while the batch it needs is in the newer file. Every
//! channel then fills, the writers wait too, and the query hangs with no CPU
//! used and no error (DataFusion issue 24883, fixed after 55.2). A grouped
//! aggregation over a few tens of megabytes under a 16 MiB limit hit it.
//!
//! A spill file is sealed as soon as it holds more than
//! `max_spill_file_size_bytes`. At one byte, each spilled batch is written to
//! a file of its own and sealed before the writer lets go of it, so the oldest
//! file is never left open and the reader always moves on. The setting is
//! read only by `RepartitionExec`'s spill pool; sorts and aggregates spill as
//! before. The cost is a file per spilled batch, on a path that already writes
//! each batch to disk.

use datafusion::common::config::ConfigNonZeroUsize;
use datafusion::config::ConfigOptions;

/// Sets how the session's operators spill (see the module's documentation).
pub fn seal_each_spilled_batch(options: &mut ConfigOptions) {
    options.execution.max_spill_file_size_bytes =
        ConfigNonZeroUsize::try_new(1).expect("one is not zero");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::seal_each_spilled_batch;

    /// Runs a grouped distinct count over strings under a 4 MiB limit on two
    /// partitions in small batches, so the hash repartitions spill from both
    /// input tasks at once (the reproduction in DataFusion issue 24883).
    /// Returns the rows and the repartitions' spill files.
    async fn grouped_distinct_count(seal: bool) -> datafusion::error::Result<(usize, usize)> {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(4 * 1024 * 1024));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()?;
        let mut config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(64);
        if seal {
            seal_each_spilled_batch(config.options_mut());
        }
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.sql(
            "CREATE TABLE events AS SELECT v % 13 AS g, \
               CASE WHEN v % 29 = 0 THEN NULL ELSE md5(CAST(v % 337 AS VARCHAR)) END AS trace_id \
             FROM generate_series(1, 40000) AS t(v)",
        )
        .await?
        .collect()
        .await?;
        let frame = ctx
            .sql(
                "SELECT g, count(DISTINCT trace_id) AS n \
                 FROM (SELECT g, arrow_cast(trace_id, 'Utf8View') AS trace_id FROM events) GROUP BY g",
            )
            .await?;
        let plan = frame.create_physical_plan().await?;
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx()).await?;
        let mut spills = 0;
        plan.transform_down(|node| {
            if node.is::<RepartitionExec>() {
                spills += node.metrics().and_then(|m| m.spill_count()).unwrap_or(0);
            }
            Ok(Transformed::no(node))
        })?;
        Ok((batches.iter().map(|b| b.num_rows()).sum(), spills))
    }

    /// Attempts that finished within `limit` each, and how many of them spilled
    /// in a repartition; `None` as soon as one hangs.
    async fn attempts(seal: bool, count: usize, limit: Duration) -> Option<usize> {
        let mut spilled = 0;
        for attempt in 0..count {
            match tokio::time::timeout(limit, grouped_distinct_count(seal)).await {
                Err(_) => return None,
                Ok(Ok((rows, spills))) => {
                    assert_eq!(rows, 13, "attempt {attempt}");
                    spilled += usize::from(spills > 0);
                }
                // The limit is far too small for the query: refusing it is a
                // legitimate answer, hanging is not.
                Ok(Err(e)) => assert!(
                    matches!(
                        e.find_root(),
                        datafusion::error::DataFusionError::ResourcesExhausted(_)
                    ),
                    "attempt {attempt}: {e}"
                ),
            }
        }
        Some(spilled)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn repartitions_that_spill_from_two_tasks_never_hang() {
        let spilled = attempts(true, 12, Duration::from_secs(20))
            .await
            .expect("a query hung in a spilling repartition");
        assert!(
            spilled > 0,
            "no attempt spilled: the test no longer covers the hang"
        );
    }

    /// The hang the setting avoids, shown: without it the same query hangs in
    /// about one attempt of six here (so it is not run by default: a test that
    /// passes by chance proves nothing). Run it with `--ignored` after a
    /// DataFusion upgrade; once it fails, the fix has arrived and the setting
    /// can go.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "shows DataFusion's hang; by chance, so not run by default"]
    async fn without_the_setting_the_same_query_hangs() {
        assert_eq!(attempts(false, 40, Duration::from_secs(10)).await, None);
    }
}
