//! A large answer as several Flight endpoints, one per gateway of the
//! cluster, so a client fetches its slices in parallel (see
//! `docs/scale-out.md`). Each ticket carries the statement, the snapshot
//! token GetFlightInfo pinned and its slice `i/n`
//! ([`kappa_catalog::snapshot::slice`]); the gateway that redeems it plans
//! the statement again at that snapshot and its tables read only their
//! share.

use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightEndpoint, Ticket};
use bytes::Bytes;
use kappa_catalog::snapshot::{Slice, slices_cleanly};
use prost::Message;
use tonic::Status;

use super::KappaFlightSqlService;
use super::runs::Runs;
use crate::cancel::QueryTicket;
use crate::error::{catalog_status, invalid_request, param_status};
use crate::prepared::PreparedHandle;

impl KappaFlightSqlService {
    /// One endpoint per slice of the answer of `statement` (planned once in
    /// `runs`, reading `snapshot`), when it is fetched in slices: a
    /// statement of one run whose answer is its slices' answers put
    /// together ([`slices_cleanly`]: no order, aggregate or limit), across
    /// a cluster, reading enough to be worth two gateways
    /// ([`crate::distributed::Cluster::slice_locations`]). `None` otherwise.
    pub(super) fn slice_endpoints(
        &self,
        statement: &PreparedHandle,
        runs: &Runs,
        snapshot: &Option<String>,
    ) -> Result<Option<Vec<FlightEndpoint>>, Status> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        if snapshot.is_none() || !adds_up(runs) {
            return Ok(None);
        }
        let places = cluster.slice_locations(runs.first_records);
        if places.is_empty() {
            return Ok(None);
        }
        let count = u32::try_from(places.len()).unwrap_or(u32::MAX);
        (0..count)
            .zip(places)
            .map(|(index, locations)| {
                let slice = Slice::new(index, count).map_err(|e| catalog_status(&e))?;
                let ticket = QueryTicket::new(statement.clone())
                    .with_snapshot(snapshot.clone())
                    .with_slice(slice)
                    .encode()
                    .map_err(|e| param_status(&e))?;
                let ticket = TicketStatementQuery {
                    statement_handle: Bytes::from(ticket),
                };
                Ok(locations.into_iter().fold(
                    FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
                    FlightEndpoint::with_location,
                ))
            })
            .collect::<Result<Vec<_>, Status>>()
            .map(Some)
    }
}

/// Refuses a slice's DoGet of a statement GetFlightInfo would not have
/// sliced (a ticket made by hand): its slices would not add up to its
/// answer.
pub(super) fn check_sliced(slice: Slice, runs: &Runs) -> Result<(), Status> {
    if !adds_up(runs) {
        return Err(invalid_request(format!(
            "slice {slice} of a statement whose answer is not its slices' answers put together \
             (it orders, aggregates, limits or joins)"
        )));
    }
    Ok(())
}

/// Whether the answer of `runs` is its slices' answers put together: one
/// run ([`slices_cleanly`]).
fn adds_up(runs: &Runs) -> bool {
    runs.len() == 1 && slices_cleanly(runs.template.logical_plan())
}
