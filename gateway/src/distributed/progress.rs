//! The progress of a query whose scans run on other gateways, for
//! PollFlightInfo.
//!
//! A distributed query's tasks report their metrics to the coordinator only
//! when the query ends, so its progress could not be read from its plan
//! until then. Instead each query carries a key ([`ProgressKey`], a header
//! on its calls to the workers); every gateway's worker keeps the scans of
//! the tasks it runs under that key ([`TaskProgress`]), and the coordinator
//! asks each gateway for the records those scans have read
//! ([`PROGRESS_ACTION`], a Flight action) and adds them up. What there is to
//! read is known on the coordinator, from the plan it made
//! ([`planned_records`]).
//!
//! The key is random and reveals only a count; the action is checked like
//! any call (the coordinator signs it as the query's caller).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::Action;
use arrow_flight::flight_service_client::FlightServiceClient;
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_distributed::{
    DistributedLeafExec, WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse,
};
use futures::StreamExt;
use kappa_catalog::work::{Work, scan_work, scans, work};
use tonic::metadata::MetadataValue;
use url::Url;

use super::GatewayChannels;

/// The header a query's calls to other gateways carry its key in.
pub const PROGRESS_HEADER: &str = "kappa-progress-key";
/// The Flight action that answers the records read by a query's tasks on
/// a gateway: its body is the key (8 bytes), its one result the gateway
/// process's id and the count (8 bytes each, big-endian), so a gateway
/// known under two addresses is counted once.
pub const PROGRESS_ACTION: &str = "kappa.progress";
/// How long a query's scans are kept after they were last registered or
/// asked about: a polled query is asked about at each poll, and one nobody
/// polls (most) is forgotten soon, so a busy gateway keeps only the last
/// minute's scans.
const KEPT_FOR: Duration = Duration::from_secs(60);
/// How long the coordinator waits for a gateway's count; one that does not
/// answer in time counts nothing this time.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The key a query's tasks keep their scans under on every gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProgressKey(pub u64);

impl ProgressKey {
    /// A fresh key, for a new query.
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// The key in `text` (a header's value).
    pub fn parse(text: &str) -> Option<Self> {
        u64::from_str_radix(text, 16).ok().map(Self)
    }

    /// The key as a header's value.
    pub fn to_header(self) -> String {
        format!("{:016x}", self.0)
    }

    /// The key as a [`PROGRESS_ACTION`]'s body.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The key in a [`PROGRESS_ACTION`]'s body.
    pub fn from_bytes(body: &[u8]) -> Option<Self> {
        Some(Self(u64::from_be_bytes(body.try_into().ok()?)))
    }
}

/// The scans of the tasks this gateway runs, by the key of their query.
#[derive(Debug, Clone)]
pub struct TaskProgress {
    /// This gateway process, among those a coordinator asks.
    id: u64,
    by_key: Arc<Mutex<HashMap<ProgressKey, Kept>>>,
}

impl Default for TaskProgress {
    fn default() -> Self {
        Self {
            id: rand::random(),
            by_key: Arc::default(),
        }
    }
}

#[derive(Debug)]
struct Kept {
    /// Only the scans: a task's plan holds its state (a join's build side)
    /// as long as it lives.
    scans: Vec<Arc<dyn ExecutionPlan>>,
    touched: Instant,
}

impl TaskProgress {
    /// Keeps the scans of `plan`, a task of the query of `key`.
    pub fn keep(&self, key: ProgressKey, plan: &Arc<dyn ExecutionPlan>) {
        let found = scans(plan);
        let mut by_key = self.by_key.lock().expect("task progress poisoned");
        by_key.retain(|_, kept| kept.touched.elapsed() < KEPT_FOR);
        let kept = by_key.entry(key).or_insert_with(|| Kept {
            scans: Vec::new(),
            touched: Instant::now(),
        });
        kept.scans.extend(found);
        kept.touched = Instant::now();
    }

    /// This gateway process's id, in its answers to [`PROGRESS_ACTION`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The answer to a [`PROGRESS_ACTION`] for `key`.
    pub fn answer(&self, key: ProgressKey) -> Vec<u8> {
        let mut body = self.id.to_be_bytes().to_vec();
        body.extend_from_slice(&self.records_read(key).to_be_bytes());
        body
    }

    /// The records read so far by the tasks of the query of `key` run here.
    pub fn records_read(&self, key: ProgressKey) -> u64 {
        let mut by_key = self.by_key.lock().expect("task progress poisoned");
        by_key.retain(|k, kept| *k == key || kept.touched.elapsed() < KEPT_FOR);
        let Some(kept) = by_key.get_mut(&key) else {
            return 0;
        };
        kept.touched = Instant::now();
        kept.scans
            .iter()
            .filter_map(scan_work)
            .map(|work| work.done)
            .sum()
    }

    /// The worker's plan rewrite (a hook of datafusion-distributed's, which
    /// leaves the plan as it is) that keeps each task's scans under `key`.
    pub fn keeping(
        &self,
        key: ProgressKey,
    ) -> impl for<'a> Fn(WorkerPlanRewriteEvent<'a>) -> Result<WorkerPlanRewriteEventResponse>
    + Send
    + Sync
    + 'static {
        let progress = self.clone();
        move |ev: WorkerPlanRewriteEvent<'_>| {
            progress.keep(key, &ev.plan);
            Ok(WorkerPlanRewriteEventResponse::new(ev.plan))
        }
    }
}

/// The records `plan`, planned on the coordinator, reads: those of each
/// scan, and of each task's share of a scan split over tasks.
pub fn planned_records(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    if let Some(leaf) = plan.downcast_ref::<DistributedLeafExec>() {
        return leaf.variants().iter().map(|v| work(v).total).sum();
    }
    if let Some(Work { total, .. }) = scan_work(plan) {
        return total;
    }
    plan.children().into_iter().map(planned_records).sum()
}

/// Whether `plan` runs across gateways (its scans are then counted where
/// they run, not in the plan itself).
pub fn is_distributed(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.name() == "DistributedExec" || plan.children().into_iter().any(is_distributed)
}

/// The id of the gateway process at `url` and the records the tasks of the
/// query of `key` have read there, asked as `authorization`; `None` if it
/// does not answer in time.
pub async fn ask(
    channels: &GatewayChannels,
    url: &Url,
    key: ProgressKey,
    authorization: Option<&str>,
) -> Option<(u64, u64)> {
    let asked = async {
        let channel = channels.channel(url).ok()?;
        let mut request = tonic::Request::new(Action {
            r#type: PROGRESS_ACTION.to_string(),
            body: key.to_bytes().to_vec().into(),
        });
        if let Some(value) = authorization.and_then(|a| MetadataValue::try_from(a).ok()) {
            request.metadata_mut().insert("authorization", value);
        }
        let mut results = FlightServiceClient::new(channel)
            .do_action(request)
            .await
            .ok()?
            .into_inner();
        let result = results.next().await?.ok()?;
        let body: [u8; 16] = result.body.as_ref().try_into().ok()?;
        let (id, records) = body.split_at(8);
        Some((
            u64::from_be_bytes(id.try_into().ok()?),
            u64::from_be_bytes(records.try_into().ok()?),
        ))
    };
    let answer = tokio::time::timeout(ASK_TIMEOUT, asked)
        .await
        .ok()
        .flatten();
    if answer.is_none() {
        tracing::debug!(%url, "no progress from this gateway this time");
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_its_header_and_its_body() {
        let key = ProgressKey(0x0123_4567_89ab_cdef);
        assert_eq!(ProgressKey::parse(&key.to_header()), Some(key));
        assert_eq!(ProgressKey::from_bytes(&key.to_bytes()), Some(key));
        assert_eq!(ProgressKey::from_bytes(b"short"), None);
        assert_eq!(ProgressKey::parse("not hex"), None);
    }

    #[test]
    fn a_query_nobody_registered_has_read_nothing() {
        assert_eq!(TaskProgress::default().records_read(ProgressKey(7)), 0);
    }
}
