//! One query over many gateways, on datafusion-distributed.
//!
//! Every gateway serves datafusion-distributed's worker service on its Flight
//! port; the gateway a query arrives at plans it and coordinates it. A plan
//! large enough to be worth it is planned a second time by the distributed
//! planner, which cuts it into stages at its repartitions and sends each
//! stage's tasks to the gateways in `--workers` (itself among them: its own
//! tasks run in-process). Kafka scans are split by offsets
//! ([`KafkaScanExec::split`]), so each task reads its share of the pinned
//! ranges: the answer is the one snapshot the coordinator planned.
//!
//! A table's lake tier travels as the files it reads at its Delta version,
//! split between tasks by rows ([`LakeFilesExec::split`]); each gateway
//! plans the Delta scan of its files again from its own lake.
//!
//! What stays on the coordinator: small queries (below two tasks' work,
//! [`TaskSize`]),
//! and plans holding a node that cannot travel yet (registry formats,
//! `latest()`, a token's replay, system tables, streams). Those run as
//! before.

pub mod calls;
pub mod channels;
pub mod codec;
pub mod lost;
pub mod members;
pub mod progress;
pub mod routes;
pub mod task_size;

use std::sync::Arc;

use datafusion::common::display::{PlanType, StringifiedPlan};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::Explain;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::analyze::AnalyzeExec;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::prelude::SessionConfig;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DistributedExt, DistributedLeafExec,
    ScaleUpLeafNodeEvent, ScaleUpLeafNodeEventResponse, SessionStateBuilderExt, Worker,
    WorkerQueryContext, display_plan_ascii,
};
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use kappa_catalog::error::TaskForAnotherGateway;
use kappa_catalog::lake::Lake;
use kappa_catalog::lake::travel::{LakeFilesExec, detach_lake_tiers};
use kappa_catalog::scan::KafkaScanExec;
use tonic::codegen::http::{HeaderMap, HeaderValue};
use url::Url;

use crate::client_tls::ClientTls;

pub use calls::WorkerCalls;
pub use channels::GatewayChannels;
pub use codec::KappaCodec;
pub use lost::ClusterError;
pub use members::Membership;
pub use progress::{ProgressKey, TaskProgress};
pub use routes::TaskRoutes;
pub use task_size::{LAKE_ROWS_PER_TASK, OFFSETS_PER_TASK, TaskSize};

/// The gateways a query may run on, and this one's part in it.
#[derive(Clone)]
pub struct Cluster {
    /// Every gateway, and those that answer.
    membership: Membership,
    /// This gateway's worker: the service it serves, and where its own
    /// tasks run.
    worker: Worker,
    codec: KappaCodec,
    /// The channels to the other gateways.
    channels: GatewayChannels,
    /// The least one task reads.
    task_size: TaskSize,
    /// The scans of the tasks run here, by query, for their progress.
    progress: TaskProgress,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster of `self_url` and `others` whose worker (with `codec`)
    /// runs this gateway's share. Call [`Self::spawn_checks`] to follow who
    /// answers.
    pub fn new(
        self_url: Url,
        others: Vec<Url>,
        worker: Worker,
        codec: KappaCodec,
        channels: GatewayChannels,
    ) -> Self {
        Self {
            membership: Membership::new(self_url, others),
            worker,
            codec,
            channels,
            task_size: TaskSize::default(),
            progress: TaskProgress::default(),
        }
    }

    /// The same cluster, reading the progress of the tasks run here from
    /// `progress` (the one this gateway's worker keeps them in).
    pub fn with_progress(mut self, progress: TaskProgress) -> Self {
        self.progress = progress;
        self
    }

    /// The scans of the tasks run here, by query.
    pub fn task_progress(&self) -> &TaskProgress {
        &self.progress
    }

    /// The records the tasks of the query of `key` have read so far on
    /// every gateway that answers, asked as `authorization`.
    pub async fn records_read(&self, key: ProgressKey, authorization: Option<&str>) -> u64 {
        let own = self.progress.records_read(key);
        let others = self
            .membership
            .live()
            .into_iter()
            .filter(|url| url != self.membership.self_url())
            .map(|url| {
                let channels = self.channels.clone();
                async move { progress::ask(&channels, &url, key, authorization).await }
            });
        // Each gateway process once, whatever addresses it is known by.
        let mut counted = std::collections::HashSet::from([self.progress.id()]);
        futures::future::join_all(others)
            .await
            .into_iter()
            .flatten()
            .filter(|(id, _)| counted.insert(*id))
            .fold(own, |sum, (_, records)| sum + records)
    }

    /// The same cluster, also counting the gateways at the addresses of
    /// `name_and_port` (see [`Membership::with_dns`]).
    pub fn with_dns(mut self, name_and_port: impl Into<String>) -> Self {
        self.membership = self.membership.with_dns(name_and_port);
        self
    }

    /// The same cluster, reaching its gateways that serve `https://` with
    /// `tls` (the CA their certificates are checked against, and this
    /// gateway's own for mutual TLS).
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.membership = self.membership.with_tls(tls);
        self
    }

    /// The same cluster, splitting scans into tasks of at least `size`.
    pub fn with_task_size(mut self, size: TaskSize) -> Self {
        self.task_size = size;
        self
    }

    /// Asks the other gateways for their health in the background, so new
    /// queries run only on those that answer.
    pub fn spawn_checks(&self) -> tokio::task::JoinHandle<()> {
        // The channel to a gateway a DNS name no longer gives is closed
        // (a pod replaced by one at another address).
        let channels = self.channels.clone();
        self.membership
            .spawn_checks(move |left| channels.close(left))
    }

    /// The worker this gateway serves.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Every gateway in the cluster, this one first.
    pub fn members(&self) -> Vec<Url> {
        self.membership.configured()
    }

    /// Whether `plan`, planned on this gateway, is worth running across the
    /// cluster and can be: it reads at least two tasks' work from Kafka
    /// and the lake, and every node in it can be sent to another gateway.
    pub fn distributable(&self, plan: &Arc<dyn ExecutionPlan>) -> bool {
        if self.membership.live().len() < 2 {
            return false;
        }
        let Some(plan) = self.traveling(plan) else {
            return false;
        };
        if self.task_size.tasks(self.task_size.work(&plan)) < 2 {
            return false;
        }
        PhysicalPlanNode::try_from_physical_plan(plan, &self.codec).is_ok()
    }

    /// The work `plan`, planned on this gateway, reads: its Kafka offsets,
    /// and its lake rows weighed as offsets ([`TaskSize`]).
    pub fn records(&self, plan: &Arc<dyn ExecutionPlan>) -> i64 {
        self.traveling(plan)
            .map_or(0, |plan| self.task_size.work(&plan))
    }

    /// `plan` (the statement under an `EXPLAIN ANALYZE`) with its lake tiers
    /// read as they travel.
    fn traveling(&self, plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
        let plan = match plan.downcast_ref::<AnalyzeExec>() {
            Some(analyze) => analyze.input(),
            None => plan,
        };
        detach_lake_tiers(Arc::clone(plan), self.codec.lake()).ok()
    }

    /// Where the slices of an answer of `records` work (see
    /// [`Self::records`]) are fetched from, one list of Flight locations per
    /// slice: the answer is given as several endpoints, so a client fetches
    /// them in parallel, when it is worth two tasks or more, one per gateway
    /// that answers. The first
    /// slice is fetched from this gateway on the client's own connection
    /// (no location); each other from a gateway of the cluster, and from
    /// this one if that gateway cannot be reached (any gateway can serve
    /// any slice). Empty when the answer is fetched whole.
    pub fn slice_locations(&self, records: i64) -> Vec<Vec<String>> {
        let live = self.membership.live();
        let worth = self.task_size.tasks(records);
        let slices = live.len().min(worth);
        if slices < 2 {
            return Vec::new();
        }
        live.iter()
            .take(slices)
            .enumerate()
            .map(|(i, url)| match i {
                0 => Vec::new(),
                _ => vec![flight_location(url), REUSE_CONNECTION.to_string()],
            })
            .collect()
    }

    /// `state` planning across the cluster: the distributed planner, kappa's
    /// codec, the members, and how Kafka scans and lake tiers are split.
    pub fn distribute(&self, state: SessionState) -> Result<SessionState> {
        let mut state = SessionStateBuilder::new_from_existing(state)
            .with_physical_optimizer_rule(Arc::new(DetachLakeTiers {
                lake: self.codec.lake().cloned(),
            }))
            .with_distributed_worker_resolver(self.membership.clone())
            .with_distributed_local_worker_context(
                self.worker
                    .to_local_worker_context(self.membership.self_url().clone()),
            )
            .with_distributed_user_codec(self.codec.clone())
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_desired_task_count_handler(scan_tasks(self.task_size))
            .with_distributed_scale_up_leaf_node_handler(split_scan)
            .with_distributed_route_tasks_handler(routes::route_tasks(self.membership.clone()))
            .with_distributed_planner()
            .build();
        // Where this query's tasks run, for its `EXPLAIN ANALYZE`.
        state
            .config_mut()
            .set_extension(Arc::new(TaskRoutes::default()));
        // A fresh key for this plan's tasks' progress: a query run again
        // after losing a gateway counts only its new tasks.
        let authorization = state
            .config()
            .get_extension::<QueryCarries>()
            .and_then(|carries| carries.authorization.clone());
        QueryCarries {
            authorization,
            progress: Some(ProgressKey::random()),
        }
        .set_on(state.config_mut())?;
        Ok(state)
    }

    /// Makes the calls a query of `config` makes to other gateways carry
    /// `authorization` (the caller, signed by this gateway; `None` without
    /// sign-in), kept in `config` as [`QueryCarries`].
    pub fn carry_caller(
        &self,
        config: &mut SessionConfig,
        authorization: Option<String>,
    ) -> Result<()> {
        QueryCarries {
            authorization,
            progress: None,
        }
        .set_on(config)
    }

    /// What `EXPLAIN` shows of a statement this cluster runs across its
    /// gateways: `local` (the single-gateway `EXPLAIN`) with its physical
    /// plan replaced by the distributed one, its stages and their tasks.
    /// `None` for a statement that would run on this gateway alone.
    pub async fn explain(
        &self,
        state: &SessionState,
        explain: &Explain,
        local: &Arc<dyn ExecutionPlan>,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(shown) = local.downcast_ref::<ExplainExec>() else {
            return Ok(None);
        };
        let statement = explain.plan.as_ref().clone();
        let planned = state.create_physical_plan(&statement).await?;
        if !self.distributable(&planned) {
            return Ok(None);
        }
        let distributed = self
            .distribute(state.clone())?
            .create_physical_plan(&statement)
            .await?;
        let text = Arc::new(display_plan_ascii(distributed.as_ref(), false));
        let plans = shown
            .stringified_plans()
            .iter()
            .map(|plan| match plan.plan_type {
                PlanType::FinalPhysicalPlan => StringifiedPlan {
                    plan_type: PlanType::FinalPhysicalPlan,
                    plan: Arc::clone(&text),
                },
                _ => plan.clone(),
            })
            .collect();
        Ok(Some(Arc::new(ExplainExec::new(
            shown.schema(),
            plans,
            shown.verbose(),
        ))))
    }

    /// `plan`, distributed, failing with the gateways it lost named (see
    /// [`lost`]); an `EXPLAIN ANALYZE` also names the gateway of each task
    /// (`routes`, the query's, see [`routes`]).
    pub fn guard(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        routes: Option<Arc<TaskRoutes>>,
    ) -> Arc<dyn ExecutionPlan> {
        let plan = match routes {
            Some(routes) if plan.name() == "DistributedAnalyzeExec" => {
                routes::naming_task_gateways(plan, routes.as_ref().clone())
            }
            _ => plan,
        };
        lost::naming_lost_gateways(plan, self.membership.clone())
    }
}

/// The location that tells a Flight client to fetch an endpoint on the
/// connection it asked on (Flight's well-known URI).
const REUSE_CONNECTION: &str = "arrow-flight-reuse-connection://?";

/// A gateway's URL (`http://host:port`, `https://…`) as a Flight location.
fn flight_location(url: &Url) -> String {
    let scheme = if url.scheme() == "https" {
        "grpc+tls"
    } else {
        "grpc+tcp"
    };
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// Lake tiers read through [`LakeFilesExec`], so they travel: run as the
/// last rule before the distributed planner cuts the plan into stages
/// (after the newest-records rule has narrowed their files).
#[derive(Debug)]
struct DetachLakeTiers {
    lake: Option<Lake>,
}

impl PhysicalOptimizerRule for DetachLakeTiers {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        detach_lake_tiers(plan, self.lake.as_ref())
    }

    fn name(&self) -> &str {
        "detach_lake_tiers"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// How many tasks a scan wants: one per task of `size`. A Kafka scan that
/// reads only the newest records or stops at a limit reads too little to
/// split; so does a lake scan with a limit.
fn scan_tasks(
    size: TaskSize,
) -> impl for<'a> Fn(DesiredTaskCountEvent<'a>) -> Option<Result<DesiredTaskCountEventResponse>>
+ Send
+ Sync
+ 'static {
    move |ev| {
        let (work, stops_early) = size.scan_work(ev.plan)?;
        if stops_early {
            return Some(Ok(DesiredTaskCountEventResponse::maximum(1)));
        }
        let tasks = size.tasks(work);
        Some(Ok(if tasks <= 1 {
            DesiredTaskCountEventResponse::maximum(1)
        } else {
            DesiredTaskCountEventResponse::desired(tasks)
        }))
    }
}

/// A scan run as `task_count` tasks, in as many output partitions as it
/// had: a Kafka scan's tasks each read a share of its offsets
/// ([`KafkaScanExec::split`]), a lake tier's a share of its files by rows
/// ([`LakeFilesExec::split`]).
fn split_scan(ev: ScaleUpLeafNodeEvent<'_>) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    if ev.task_count <= 1 {
        return None;
    }
    let variants: Vec<Arc<dyn ExecutionPlan>> =
        if let Some(scan) = ev.plan.downcast_ref::<KafkaScanExec>() {
            let partitions = ev.plan.properties().partitioning.partition_count();
            scan.split(ev.task_count, partitions)
                .into_iter()
                .map(|variant| Arc::new(variant) as _)
                .collect()
        } else {
            let files = ev.plan.downcast_ref::<LakeFilesExec>()?;
            files
                .split(ev.task_count)
                .into_iter()
                .map(|variant| Arc::new(variant) as _)
                .collect()
        };
    Some(
        DistributedLeafExec::try_new(Arc::clone(ev.plan), variants)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

const AUTHORIZATION: &str = "authorization";

/// What a query's calls to other gateways carry.
#[derive(Debug, Clone)]
pub struct QueryCarries {
    /// Its caller, signed by the coordinator (`None` without sign-in).
    pub authorization: Option<String>,
    /// The key its tasks' progress is kept under on every gateway, once it
    /// is planned across them.
    pub progress: Option<ProgressKey>,
}

impl QueryCarries {
    /// What the calls of the task whose call brought `headers` carry on.
    fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            authorization: text(AUTHORIZATION).map(str::to_string),
            progress: text(progress::PROGRESS_HEADER).and_then(ProgressKey::parse),
        }
    }

    /// Sends these on the calls to other gateways that queries of `config`
    /// make, and keeps them in `config`.
    fn set_on(self, config: &mut SessionConfig) -> Result<()> {
        let header = |value: &str| {
            HeaderValue::from_str(value).map_err(|e| {
                datafusion::error::DataFusionError::Internal(format!("a header of a task: {e}"))
            })
        };
        let mut headers = HeaderMap::new();
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, header(authorization)?);
        }
        if let Some(key) = self.progress {
            headers.insert(progress::PROGRESS_HEADER, header(&key.to_header())?);
        }
        config.set_distributed_passthrough_headers(headers)?;
        config.set_extension(Arc::new(self));
        Ok(())
    }
}

/// Makes the session a task runs in on this gateway's worker: kappa's
/// functions, spill setting and codec, as a query planned here has.
pub async fn worker_session(
    ctx: WorkerQueryContext,
    codec: KappaCodec,
    channels: GatewayChannels,
    progress: TaskProgress,
    max_bytes: usize,
) -> Result<SessionState> {
    let mut builder = ctx
        .builder
        .with_distributed_user_codec(codec)
        .with_distributed_channel_resolver(channels);
    let carries = QueryCarries::from_headers(&ctx.headers);
    if let Some(key) = carries.progress {
        // Each task's scans are kept under its query's key, for the
        // coordinator's progress reports.
        builder = builder.with_distributed_worker_plan_rewrite_handler(progress.keeping(key));
    }
    // A task's own calls to other gateways (a shuffle's reads) carry what
    // its coordinator sent.
    if let Some(config) = builder.config().as_mut() {
        carries.set_on(config)?;
    }
    let mut state = builder.build();
    // kappa's errors keep their kind on the way back to the coordinator
    // (the coordinator's own tasks run here too, and read the same).
    state
        .config_mut()
        .set_extension(Arc::new(TaskForAnotherGateway));
    crate::spill::seal_each_spilled_batch(state.config_mut().options_mut());
    crate::json::register(&mut state)?;
    crate::guarded_functions::guard_functions(&mut state, max_bytes)?;
    Ok(state)
}
