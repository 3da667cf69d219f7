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
//! A distributed plan's work runs on other gateways, whose counts come back
//! only at its end: its progress stays at 0 until then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::sql::{Any, TicketStatementQuery};
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, PollInfo, Ticket};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use kappa_catalog::lake::last::{file_scan, logged_rows};
use kappa_catalog::scan::KafkaScanExec;
use prost::Message;
use tonic::{Request, Response, Status};

use arrow_flight::sql::Command;

use super::KappaFlightSqlService;
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
    state: Mutex<State>,
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
            state: Mutex::new(State::Running),
        });
        self.by_id
            .lock()
            .expect("polls poisoned")
            .insert(id, Arc::clone(&polled));
        let reservation = MemoryConsumer::new(format!("polled result {id}")).register(pool);
        tokio::spawn(collect(stream, Arc::clone(&polled), reservation));
        polled.answer(id)
    }

    /// The PollInfo of the statement `descriptor` names, if it is a poll
    /// descriptor (`None` for any other command).
    pub fn poll_again(
        &self,
        descriptor: &FlightDescriptor,
        settings: &Settings,
    ) -> Option<Result<PollInfo, Status>> {
        let id = poll_id(&descriptor.cmd)?;
        Some(self.find(id, settings).and_then(|polled| {
            let failed = match &*polled.state.lock().expect("poll state poisoned") {
                State::Failed(status) => Some(status.clone()),
                _ => None,
            };
            match failed {
                Some(status) => {
                    self.by_id.lock().expect("polls poisoned").remove(&id);
                    Err(status)
                }
                None => Ok(polled.answer(id)),
            }
        }))
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
    /// What a poll of this statement, number `id`, answers now.
    fn answer(&self, id: u64) -> PollInfo {
        let done = matches!(
            &*self.state.lock().expect("poll state poisoned"),
            State::Done { .. }
        );
        if done {
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
            // Never 1 before the end: the last batches are still to come.
            progress: Some(self.plan.as_ref().map_or(0.0, |p| progress(p).min(0.99))),
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

/// The share of `plan`'s known work done: offsets fetched by its Kafka
/// scans and rows read from its lake files, of all they read.
pub fn progress(plan: &Arc<dyn ExecutionPlan>) -> f64 {
    let (done, total) = work(plan);
    if total == 0 {
        0.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    }
}

/// `(done, total)` of the scans in `plan`.
fn work(plan: &Arc<dyn ExecutionPlan>) -> (u64, u64) {
    let metric = |name: &str| {
        plan.metrics()
            .and_then(|m| m.sum_by_name(name))
            .map_or(0, |v| v.as_usize() as u64)
    };
    let own = if let Some(scan) = plan.downcast_ref::<KafkaScanExec>() {
        let total = u64::try_from(scan.spec().offsets()).unwrap_or(0);
        (metric("records_fetched").min(total), total)
    } else if let Some(config) = file_scan(plan) {
        let total: u64 = config
            .file_groups
            .iter()
            .flat_map(|g| g.iter())
            .filter_map(logged_rows)
            .sum();
        (metric("output_rows").min(total), total)
    } else {
        (0, 0)
    };
    plan.children()
        .into_iter()
        .map(work)
        .fold(own, |(d, t), (cd, ct)| (d + cd, t + ct))
}

impl KappaFlightSqlService {
    /// PollFlightInfo (see the module): a statement or prepared statement
    /// started, or one started before polled again.
    pub(super) async fn poll_statement(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let settings = Settings::of_request(&request)?;
        if let Some(answer) = self.polls.poll_again(request.get_ref(), &settings) {
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
        let stream = self
            .execute(&statement, &settings, id, planned)
            .await?
            .into_inner();
        let pool = Arc::clone(&self.runtime.memory_pool);
        Ok(Response::new(self.polls.start(
            &settings.caller,
            info,
            plan,
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
