//! PollFlightInfo: a statement run in the background, its progress asked
//! for until it is done (ADBC's incremental execution,
//! `adbc.statement.exec.incremental`).
//!
//! The first poll plans the statement as GetFlightInfo does (one snapshot),
//! starts it, and answers with a descriptor to poll again. Each later poll
//! answers the share of the plan's known work done so far: Kafka offsets
//! fetched of those its scans read, and lake rows read of those its files
//! hold. Once the statement has finished, the poll answers one endpoint
//! whose ticket streams the result, kept until then under the gateway's
//! memory limit (a result larger than it fails the query with
//! ResourceExhausted: fetch such results with GetFlightInfo and DoGet, which
//! stream). A failed statement's next poll answers its error.
//!
//! A distributed plan's scans run on the gateways its tasks were sent to:
//! its progress is their records read, asked of every gateway
//! ([`crate::distributed::progress`]), of the records its plan reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::sql::{Any, TicketStatementQuery};
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, PollInfo, Ticket};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use kappa_catalog::work::work;
use prost::Message;
use tonic::{Request, Response, Status};

use arrow_flight::sql::Command;

use super::KappaFlightSqlService;
use crate::distributed::progress::{is_distributed, planned_records};
use crate::distributed::{Cluster, ProgressKey, QueryCarries};
use crate::flight::DoGetStream;
use crate::prepared::PreparedHandle;
use crate::settings::Settings;

/// What a poll descriptor's command starts with; the query's number follows.
const POLL_HANDLE: &[u8] = b"kappa.poll/";
/// The type of a polled result's ticket.
const POLLED_RESULT: &str = "type.kappa/PolledResult";
/// How long a finished result waits for its DoGet.
const KEPT_FOR: Duration = Duration::from_secs(600);

/// The statements started by PollFlightInfo, by number.
#[derive(Debug, Default)]
pub struct Polls {
    next: AtomicU64,
    by_id: Mutex<HashMap<u64, Arc<Polled>>>,
}

/// One polled statement.
#[derive(Debug)]
struct Polled {
    /// Who started it: only they may poll it or fetch its result.
    caller: String,
    /// The FlightInfo GetFlightInfo would answer, without endpoints.
    info: FlightInfo,
    /// Its physical plan, to count the work done (`None` if not planned
    /// ahead, as for a statement with parameter rows).
    plan: Option<Arc<dyn ExecutionPlan>>,
    /// For a plan run across gateways: where its progress is counted.
    across: Option<Across>,
    /// The progress last answered: a gateway that does not answer in time
    /// must not make it go back.
    answered: Mutex<f64>,
    state: Mutex<State>,
}

/// A distributed plan's progress: the records its tasks have read on every
/// gateway (kept there under `key`), of the `total` it reads.
#[derive(Debug)]
pub struct Across {
    key: ProgressKey,
    authorization: Option<String>,
    total: u64,
}

impl Across {
    /// Where the progress of `plan`, planned with `carries`, is counted, if
    /// it runs across gateways.
    pub fn of(plan: &Arc<dyn ExecutionPlan>, carries: Option<&QueryCarries>) -> Option<Self> {
        let carries = carries?;
        let key = carries.progress?;
        is_distributed(plan).then(|| Self {
            key,
            authorization: carries.authorization.clone(),
            total: planned_records(plan),
        })
    }
}

#[derive(Debug)]
enum State {
    Running,
    Done {
        data: Vec<FlightData>,
        at: Instant,
        _held: MemoryReservation,
    },
    Failed(Status),
}

impl Polls {
    /// Starts `stream` (a statement's DoGet stream, whose plan is `plan`)
    /// for `caller`, keeping its result under `pool`; the first PollInfo.
    pub fn start(
        &self,
        caller: &str,
        info: FlightInfo,
        plan: Option<Arc<dyn ExecutionPlan>>,
        across: Option<Across>,
        stream: DoGetStream,
        pool: &Arc<dyn MemoryPool>,
    ) -> PollInfo {
        self.forget_unfetched();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let polled = Arc::new(Polled {
            caller: caller.to_string(),
            info: FlightInfo {
                endpoint: vec![],
                ..info
            },
            plan,
            across,
            answered: Mutex::new(0.0),
            state: Mutex::new(State::Running),
        });
        self.by_id
            .lock()
            .expect("polls poisoned")
            .insert(id, Arc::clone(&polled));
        let reservation = MemoryConsumer::new(format!("polled result {id}")).register(pool);
        tokio::spawn(collect(stream, Arc::clone(&polled), reservation));
        polled.answer(id, 0.0)
    }

    /// The PollInfo of the statement `descriptor` names, if it is a poll
    /// descriptor (`None` for any other command); a distributed
    /// statement's progress is asked of `cluster`'s gateways.
    pub async fn poll_again(
        &self,
        descriptor: &FlightDescriptor,
        settings: &Settings,
        cluster: Option<&Cluster>,
    ) -> Option<Result<PollInfo, Status>> {
        let id = poll_id(&descriptor.cmd)?;
        let polled = match self.find(id, settings) {
            Ok(polled) => polled,
            Err(status) => return Some(Err(status)),
        };
        let failed = match &*polled.state.lock().expect("poll state poisoned") {
            State::Failed(status) => Some(status.clone()),
            _ => None,
        };
        if let Some(status) = failed {
            self.by_id.lock().expect("polls poisoned").remove(&id);
            return Some(Err(status));
        }
        let progress = polled.progress(cluster).await;
        Some(Ok(polled.answer(id, progress)))
    }

    /// The result of a finished polled statement, for the DoGet of its
    /// ticket; `None` for any other ticket.
    pub fn fetch(
        &self,
        message: &Any,
        settings: &Settings,
    ) -> Option<Result<Response<DoGetStream>, Status>> {
        if message.type_url != POLLED_RESULT {
            return None;
        }
        let fetched = (|| {
            let id =
                u64::from_be_bytes(message.value.as_ref().try_into().map_err(|_| {
                    Status::invalid_argument("a polled result's ticket holds 8 bytes")
                })?);
            let polled = self.find(id, settings)?;
            self.by_id.lock().expect("polls poisoned").remove(&id);
            let state = std::mem::replace(
                &mut *polled.state.lock().expect("poll state poisoned"),
                State::Failed(Status::not_found("this result was fetched already")),
            );
            match state {
                State::Done { data, _held, .. } => {
                    // The memory is given back once the result is sent.
                    let stream = futures::stream::unfold(
                        (data.into_iter(), _held),
                        |(mut rest, held)| async move {
                            rest.next().map(|message| (Ok(message), (rest, held)))
                        },
                    );
                    Ok(Response::new(Box::pin(stream) as DoGetStream))
                }
                State::Running => Err(Status::failed_precondition(
                    "the query is still running: poll it until it answers its endpoint",
                )),
                State::Failed(status) => Err(status),
            }
        })();
        Some(fetched)
    }

    fn find(&self, id: u64, settings: &Settings) -> Result<Arc<Polled>, Status> {
        let polled = self
            .by_id
            .lock()
            .expect("polls poisoned")
            .get(&id)
            .cloned()
            .filter(|p| p.caller == settings.caller);
        polled.ok_or_else(|| {
            Status::not_found(format!(
                "no polled query {id}: it was fetched already, or its result waited longer than \
                 {}s",
                KEPT_FOR.as_secs()
            ))
        })
    }

    /// Drops the results nobody fetched within [`KEPT_FOR`].
    fn forget_unfetched(&self) {
        self.by_id.lock().expect("polls poisoned").retain(|_, p| {
            !matches!(&*p.state.lock().expect("poll state poisoned"),
                State::Done { at, .. } if at.elapsed() > KEPT_FOR)
        });
    }
}

impl Polled {
    /// Whether the statement has finished and its result is kept.
    fn is_done(&self) -> bool {
        matches!(
            &*self.state.lock().expect("poll state poisoned"),
            State::Done { .. }
        )
    }

    /// The share of its known work done so far, never less than answered
    /// before, and never 1 before the end (the last batches are still to
    /// come); 1 once finished, without asking anyone.
    async fn progress(&self, cluster: Option<&Cluster>) -> f64 {
        if self.is_done() {
            return 1.0;
        }
        let now = match (&self.across, cluster) {
            (Some(across), Some(cluster)) => {
                let read = cluster
                    .records_read(across.key, across.authorization.as_deref())
                    .await;
                kappa_catalog::work::Work {
                    done: read.min(across.total),
                    total: across.total,
                }
                .share()
            }
            _ => self.plan.as_ref().map_or(0.0, |p| work(p).share()),
        };
        let mut answered = self.answered.lock().expect("poll progress poisoned");
        *answered = answered.max(now.min(0.99));
        *answered
    }

    /// What a poll of this statement, number `id`, answers now, if its
    /// progress is `progress`.
    fn answer(&self, id: u64, progress: f64) -> PollInfo {
        if self.is_done() {
            let ticket = Any {
                type_url: POLLED_RESULT.to_string(),
                value: id.to_be_bytes().to_vec().into(),
            };
            let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket.encode_to_vec()));
            return PollInfo {
                info: Some(self.info.clone().with_endpoint(endpoint)),
                flight_descriptor: None,
                progress: Some(1.0),
                expiration_time: None,
            };
        }
        let mut handle = POLL_HANDLE.to_vec();
        handle.extend_from_slice(&id.to_be_bytes());
        PollInfo {
            info: Some(self.info.clone()),
            flight_descriptor: Some(FlightDescriptor::new_cmd(handle)),
            progress: Some(progress),
            expiration_time: None,
        }
    }
}

/// The number of the statement a poll descriptor's command names.
fn poll_id(cmd: &[u8]) -> Option<u64> {
    let id = cmd.strip_prefix(POLL_HANDLE)?;
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

/// The ticket handle in the FlightInfo of a statement (what its DoGet runs).
pub fn statement_handle(info: &FlightInfo) -> Result<bytes::Bytes, Status> {
    let ticket = info
        .endpoint
        .first()
        .and_then(|e| e.ticket.as_ref())
        .ok_or_else(|| Status::internal("a statement's FlightInfo without a ticket"))?;
    let any = Any::decode(ticket.ticket.clone())
        .map_err(|e| Status::internal(format!("a statement's ticket: {e}")))?;
    let statement = any
        .unpack::<TicketStatementQuery>()
        .map_err(|e| Status::internal(format!("a statement's ticket: {e}")))?
        .ok_or_else(|| Status::internal("a statement's ticket of another kind"))?;
    Ok(statement.statement_handle)
}

/// Reads `stream` to its end into `polled`, each message counted in
/// `reservation`; a stream that fails, or outgrows the memory limit, leaves
/// its error.
async fn collect(mut stream: DoGetStream, polled: Arc<Polled>, reservation: MemoryReservation) {
    let mut data = Vec::new();
    let end = loop {
        match stream.next().await {
            None => break Ok(()),
            Some(Err(status)) => break Err(status),
            Some(Ok(message)) => {
                let size = message.data_header.len() + message.data_body.len();
                if reservation.try_grow(size).is_err() {
                    break Err(Status::resource_exhausted(
                        "the result of a polled query (incremental execution) is kept until it \
                         is fetched, and this one outgrew --memory-limit; run it without \
                         incremental execution, which streams its result, or raise \
                         --memory-limit (KAPPA_MEMORY_LIMIT)",
                    ));
                }
                data.push(message);
            }
        }
    };
    // Dropping the stream stops a query that failed here.
    drop(stream);
    *polled.state.lock().expect("poll state poisoned") = match end {
        Ok(()) => State::Done {
            data,
            at: Instant::now(),
            _held: reservation,
        },
        Err(status) => State::Failed(status),
    };
}

impl KappaFlightSqlService {
    /// PollFlightInfo (see the module): a statement or prepared statement
    /// started, or one started before polled again.
    pub(super) async fn poll_statement(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let settings = Settings::of_request(&request)?;
        if let Some(answer) = self
            .polls
            .poll_again(request.get_ref(), &settings, self.cluster.as_deref())
            .await
        {
            return answer.map(Response::new);
        }
        let command = Any::decode(request.get_ref().cmd.clone())
            .ok()
            .and_then(|any| Command::try_from(any).ok());
        let statement = match command {
            Some(Command::CommandStatementQuery(query)) => PreparedHandle::unbound(query.query),
            Some(Command::CommandPreparedStatementQuery(query)) => {
                self.prepared(&query.prepared_statement_handle, &settings)?
            }
            _ => {
                return Err(Status::unimplemented(
                    "PollFlightInfo answers queries and prepared statements",
                ));
            }
        };
        let info = self
            .statement_info(statement, request, false)
            .await?
            .into_inner();
        let handle = statement_handle(&info)?;
        let (statement, id, planned) = self.ticket_plan(&handle, &settings)?;
        let plan = planned.as_ref().and_then(|(runs, _)| runs.first_plan());
        let carries = planned
            .as_ref()
            .and_then(|(runs, _)| runs.first_task())
            .and_then(|task| task.session_config().get_extension::<QueryCarries>());
        let across = plan
            .as_ref()
            .and_then(|plan| Across::of(plan, carries.as_deref()));
        let stream = self
            .execute(&statement, &settings, id, planned)
            .await?
            .into_inner();
        let pool = Arc::clone(&self.runtime.memory_pool);
        Ok(Response::new(self.polls.start(
            &settings.caller,
            info,
            plan,
            across,
            stream,
            &pool,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_descriptor_names_its_query_and_nothing_else_is_one() {
        let mut handle = POLL_HANDLE.to_vec();
        handle.extend_from_slice(&41_u64.to_be_bytes());
        assert_eq!(poll_id(&handle), Some(41));
        assert_eq!(poll_id(b"SELECT 1"), None);
        assert_eq!(poll_id(&handle[..handle.len() - 1]), None);
    }
}
