//! Cancelling running queries: `CancelFlightInfo` (and the older
//! `CancelQuery` action) stops a query's work and its Kafka consumers.
//!
//! Handles stay stateless: a statement ticket carries a query id next to
//! the SQL, and a gateway keeps the ids of the queries it is running now.
//! Cancelling a query another gateway runs (behind a load balancer) answers
//! NotFound; closing the stream, which every client can do, works anywhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tonic::Status;

use kappa_catalog::snapshot::Slice;

use crate::prepared::{ParamError, PreparedHandle};

/// The prefix of a statement handle that carries a query id.
const PREFIX: &[u8] = b"kappa-q:";

/// The prefix of the line after the id that carries the snapshot token of
/// what the statement read when it was planned.
const SNAPSHOT_PREFIX: &[u8] = b"kappa-s:";

/// The prefix of the line after the snapshot's that names the slice of the
/// answer the ticket reads.
const SLICE_PREFIX: &[u8] = b"kappa-p:";

/// A statement ticket (the query's id and the statement with its bound
/// parameters), or a prepared statement's handle (the id its binding is
/// kept under, see [`crate::bindings`], and the statement).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryTicket {
    /// Random: unique in practice, and not guessable from another id.
    pub id: u64,
    /// The statement.
    pub statement: PreparedHandle,
    /// The snapshot token of what the statement read when GetFlightInfo
    /// planned it: a DoGet that plans it again (on another gateway) reads
    /// the same state.
    pub snapshot: Option<String>,
    /// The share of the answer this ticket reads, when GetFlightInfo gave
    /// the answer as several endpoints (with `snapshot`).
    pub slice: Option<Slice>,
}

impl QueryTicket {
    /// A ticket with a new id for `statement`: random, so that nobody can
    /// guess another caller's id to cancel their query or take their
    /// binding.
    pub fn new(statement: PreparedHandle) -> Self {
        Self {
            id: rand::random(),
            statement,
            snapshot: None,
            slice: None,
        }
    }

    /// The ticket carrying `snapshot` too.
    pub fn with_snapshot(mut self, snapshot: Option<String>) -> Self {
        self.snapshot = snapshot;
        self
    }

    /// The ticket reading share `slice` of the answer.
    pub fn with_slice(mut self, slice: Slice) -> Self {
        self.slice = Some(slice);
        self
    }

    /// The statement handle bytes: `kappa-q:<id hex>\n`, with a snapshot
    /// `kappa-s:<token>\n` and then a slice `kappa-p:<i>/<n>\n`, and the
    /// statement as [`PreparedHandle::encode`] writes it.
    pub fn encode(&self) -> Result<Vec<u8>, ParamError> {
        let mut out = format!("kappa-q:{:016x}\n", self.id).into_bytes();
        if let Some(token) = &self.snapshot {
            out.extend(SNAPSHOT_PREFIX);
            out.extend(token.as_bytes());
            out.push(b'\n');
        }
        if let Some(slice) = &self.slice {
            out.extend(SLICE_PREFIX);
            out.extend(slice.to_string().as_bytes());
            out.push(b'\n');
        }
        out.extend(self.statement.encode()?);
        Ok(out)
    }

    /// A handle as [`Self::encode`] writes it, or a statement handle without
    /// an id (a prepared statement's from an older gateway, or one used as a
    /// DoGet ticket).
    pub fn decode(handle: &[u8]) -> Result<(Option<u64>, PreparedHandle), ParamError> {
        if let Some(rest) = handle.strip_prefix(PREFIX)
            && let Some(newline) = rest.iter().position(|&b| b == b'\n')
            && let Ok(id) = std::str::from_utf8(&rest[..newline])
            && let Ok(id) = u64::from_str_radix(id, 16)
        {
            let (_, rest) = split_snapshot(&rest[newline + 1..]);
            let (_, statement) = split_slice(rest);
            return Ok((Some(id), PreparedHandle::decode(statement)?));
        }
        Ok((None, PreparedHandle::decode(handle)?))
    }

    /// The snapshot token a handle as [`Self::encode`] writes it carries.
    pub fn snapshot(handle: &[u8]) -> Option<String> {
        let rest = handle.strip_prefix(PREFIX)?;
        let newline = rest.iter().position(|&b| b == b'\n')?;
        split_snapshot(&rest[newline + 1..]).0
    }

    /// The slice of the answer a handle as [`Self::encode`] writes it reads.
    pub fn slice(handle: &[u8]) -> Option<Slice> {
        let rest = handle.strip_prefix(PREFIX)?;
        let newline = rest.iter().position(|&b| b == b'\n')?;
        let (_, rest) = split_snapshot(&rest[newline + 1..]);
        split_slice(rest).0
    }
}

/// The slice line at the start of `rest`, if any, and what follows it.
fn split_slice(rest: &[u8]) -> (Option<Slice>, &[u8]) {
    if let Some(line) = rest.strip_prefix(SLICE_PREFIX)
        && let Some(newline) = line.iter().position(|&b| b == b'\n')
        && let Ok(text) = std::str::from_utf8(&line[..newline])
        && let Ok(slice) = text.parse()
    {
        return (Some(slice), &line[newline + 1..]);
    }
    (None, rest)
}

/// The snapshot line at the start of `rest`, if any, and what follows it.
fn split_snapshot(rest: &[u8]) -> (Option<String>, &[u8]) {
    if let Some(line) = rest.strip_prefix(SNAPSHOT_PREFIX)
        && let Some(newline) = line.iter().position(|&b| b == b'\n')
        && let Ok(token) = std::str::from_utf8(&line[..newline])
    {
        return (Some(token.to_string()), &line[newline + 1..]);
    }
    (None, rest)
}

/// The queries this gateway is running, by id.
#[derive(Debug, Default)]
pub struct RunningQueries {
    queries: Mutex<HashMap<u64, watch::Sender<bool>>>,
}

impl RunningQueries {
    /// `stream` (query `id`'s results) ending with `Cancelled` as soon as the
    /// query is cancelled; dropping the stream drops the query's work.
    pub fn track<S, T>(
        self: &Arc<Self>,
        id: u64,
        stream: S,
    ) -> impl Stream<Item = Result<T, Status>> + Send + 'static
    where
        S: Stream<Item = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        let (cancel, mut cancelled) = watch::channel(false);
        self.queries
            .lock()
            .expect("running queries poisoned")
            .insert(id, cancel);
        let listed = Listed {
            queries: Arc::clone(self),
            id,
        };
        let mut watching = cancelled.clone();
        let stop = async move {
            let _ = watching.wait_for(|&c| c).await;
        };
        let end = futures::stream::once(async move {
            let _listed = listed;
            (*cancelled.borrow_and_update())
                .then(|| Err(Status::cancelled("query cancelled (CancelFlightInfo)")))
        })
        .filter_map(std::future::ready);
        stream.take_until(Box::pin(stop)).chain(end)
    }

    /// Cancels query `id`; `false` if this gateway is not running it.
    pub fn cancel(&self, id: u64) -> bool {
        let queries = self.queries.lock().expect("running queries poisoned");
        match queries.get(&id) {
            Some(cancel) => {
                cancel.send_replace(true);
                true
            }
            None => false,
        }
    }
}

/// Keeps a query listed while its stream lives.
struct Listed {
    queries: Arc<RunningQueries>,
    id: u64,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.queries
            .queries
            .lock()
            .expect("running queries poisoned")
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_carry_an_id_and_plain_sql_has_none() {
        let ticket = QueryTicket::new(PreparedHandle::unbound("SELECT 1\n-- two lines"));
        let (id, statement) = QueryTicket::decode(&ticket.encode().unwrap()).unwrap();
        assert_eq!((id, statement), (Some(ticket.id), ticket.statement.clone()));
        let pinned = QueryTicket::new(PreparedHandle::unbound("SELECT 4"))
            .with_snapshot(Some("ks1.AAAA".into()));
        let encoded = pinned.encode().unwrap();
        assert_eq!(
            QueryTicket::decode(&encoded).unwrap(),
            (Some(pinned.id), PreparedHandle::unbound("SELECT 4"))
        );
        assert_eq!(QueryTicket::snapshot(&encoded).as_deref(), Some("ks1.AAAA"));
        assert_eq!(QueryTicket::snapshot(&ticket.encode().unwrap()), None);
        assert_eq!(QueryTicket::slice(&encoded), None);
        // A slice of the answer, after the snapshot it is a share of.
        let slice = Slice::new(1, 3).unwrap();
        let sliced = pinned.clone().with_slice(slice).encode().unwrap();
        assert_eq!(
            QueryTicket::decode(&sliced).unwrap(),
            (Some(pinned.id), PreparedHandle::unbound("SELECT 4"))
        );
        assert_eq!(QueryTicket::snapshot(&sliced).as_deref(), Some("ks1.AAAA"));
        assert_eq!(QueryTicket::slice(&sliced), Some(slice));
        let x = || QueryTicket::new(PreparedHandle::unbound("x"));
        assert_ne!(x().id, x().id);
        assert_eq!(
            QueryTicket::decode(b"SELECT 2").unwrap(),
            (None, PreparedHandle::unbound("SELECT 2"))
        );
        // Tickets from gateways before versioned handles.
        assert_eq!(
            QueryTicket::decode(b"kappa-q:00000000000000ff\nSELECT 3").unwrap(),
            (Some(255), PreparedHandle::unbound("SELECT 3"))
        );
    }

    #[tokio::test]
    async fn a_cancelled_stream_ends_with_cancelled() {
        let queries = Arc::new(RunningQueries::default());
        let endless = futures::stream::repeat_with(|| Ok::<u32, Status>(1));
        let mut stream = Box::pin(queries.track(7, endless));
        assert_eq!(stream.next().await.unwrap().unwrap(), 1);
        assert!(queries.cancel(7));
        let rest: Vec<_> = stream.collect().await;
        let last = rest.last().expect("an error at the end");
        assert_eq!(last.as_ref().unwrap_err().code(), tonic::Code::Cancelled);
        assert!(
            !queries.cancel(7),
            "no longer listed once the stream is gone"
        );
    }
}
