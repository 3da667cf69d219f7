//! The runs of a planned statement: one per parameter row (one in all
//! without parameters), each bound only when it is taken.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::DataFrame;

use crate::stop::QueryStop;

/// A run's physical plan and task context, and the stop it was planned
/// under.
pub(super) type FirstPlanned = ((Arc<dyn ExecutionPlan>, Arc<TaskContext>), Arc<QueryStop>);

/// A planned statement: its runs and the schema of their results.
pub(crate) type Planned = (Runs, SchemaRef);

/// The runs of a planned statement, each bound to its parameter row only
/// when it is taken: a bound plan holds its own copy of the session (about
/// 40 KB), so binding 10,000 rows up front held 400 MB.
#[derive(Debug)]
pub(crate) struct Runs {
    pub(super) template: DataFrame,
    /// The first run's physical plan and stop, when GetFlightInfo planned
    /// it to name its snapshot.
    pub(super) first_planned: Option<FirstPlanned>,
    /// The records that plan reads, counted across a cluster.
    pub(super) first_records: i64,
    /// Each run's values; `None` runs the statement as planned.
    rows: std::vec::IntoIter<Option<Vec<datafusion::scalar::ScalarValue>>>,
}

impl Runs {
    /// The first run's physical plan, when GetFlightInfo planned it.
    pub(super) fn first_plan(&self) -> Option<Arc<dyn ExecutionPlan>> {
        self.first_planned
            .as_ref()
            .map(|((plan, _), _)| Arc::clone(plan))
    }

    /// The task context of the first run's plan, when GetFlightInfo planned
    /// it.
    pub(super) fn first_task(&self) -> Option<Arc<TaskContext>> {
        self.first_planned
            .as_ref()
            .map(|((_, task), _)| Arc::clone(task))
    }

    /// A statement without parameters: one run.
    pub(super) fn once(template: DataFrame) -> Self {
        Self {
            template,
            first_planned: None,
            first_records: 0,
            rows: vec![None].into_iter(),
        }
    }

    /// The first run, bound, without taking it.
    pub(super) fn first(&self) -> Option<datafusion::error::Result<DataFrame>> {
        let values = self.rows.as_slice().first()?;
        Some(self.run(values.clone()))
    }

    /// The statement bound to `values` (`None`: as planned).
    fn run(
        &self,
        values: Option<Vec<datafusion::scalar::ScalarValue>>,
    ) -> datafusion::error::Result<DataFrame> {
        let run = self.template.clone();
        match values {
            None => Ok(run),
            Some(values) => run.with_param_values(values),
        }
    }

    /// One run per parameter row.
    pub(super) fn bound(
        template: DataFrame,
        rows: Vec<Vec<datafusion::scalar::ScalarValue>>,
    ) -> Self {
        let rows: Vec<_> = rows.into_iter().map(Some).collect();
        Self {
            template,
            first_planned: None,
            first_records: 0,
            rows: rows.into_iter(),
        }
    }
}

impl Iterator for Runs {
    type Item = datafusion::error::Result<DataFrame>;

    fn next(&mut self) -> Option<Self::Item> {
        let values = self.rows.next()?;
        Some(self.run(values))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.rows.size_hint()
    }
}

impl ExactSizeIterator for Runs {}
