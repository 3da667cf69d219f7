//! Per-call settings: `kappa.*` request headers set on the call's session,
//! and what the caller may read.

use kappa_catalog::snapshot::Slice;
use tonic::Status;

use crate::auth::{ANONYMOUS, Grants, Identity};
use crate::error::invalid_request;

/// The `kappa.*` settings a call carries as request headers (gRPC
/// metadata), such as `kappa.allow_gaps: true`. Handles are stateless, so a
/// setting travels with every call instead of living in a server session:
/// ADBC sends it with `adbc.flight.sql.rpc.call_header.kappa.allow_gaps`
/// on a connection or a statement, pyarrow.flight with `FlightCallOptions`.
#[derive(Debug, Default)]
pub struct Settings {
    /// `kappa.*` names and their values.
    pub values: Vec<(String, String)>,
    /// The tables the caller may read and list.
    pub grants: Grants,
    /// The tables the caller may create and drop by SQL.
    pub define: Grants,
    /// Who calls (`anonymous` without sign-in).
    pub caller: String,
    /// The share of a statement's answer the call reads: a DoGet of one of
    /// several endpoints (its ticket names it, never a header).
    pub slice: Option<Slice>,
}

impl Settings {
    /// The settings of a call and its caller's grants (the authentication
    /// interceptor puts the caller's [`Identity`] in every call; without
    /// one, as when the service runs without it in a test, all tables).
    pub fn of_request<T>(request: &tonic::Request<T>) -> Result<Self, Status> {
        let mut settings = Self::of(request.metadata())?;
        if let Some(identity) = request.extensions().get::<Identity>() {
            settings.grants = identity.grants.clone();
            settings.define = identity.define.clone();
            settings.caller = identity.user.clone();
        }
        Ok(settings)
    }

    /// The `kappa.*` headers of a call.
    pub fn of(metadata: &tonic::metadata::MetadataMap) -> Result<Self, Status> {
        let mut settings = Vec::new();
        for entry in metadata.iter() {
            let tonic::metadata::KeyAndValueRef::Ascii(name, value) = entry else {
                continue;
            };
            if !name.as_str().starts_with("kappa.") {
                continue;
            }
            let value = value
                .to_str()
                .map_err(|_| invalid_request(format!("setting {}: not text", name.as_str())))?;
            settings.push((name.as_str().to_string(), value.trim().to_string()));
        }
        Ok(Self {
            values: settings,
            grants: Grants::all(),
            define: Grants::all(),
            caller: ANONYMOUS.to_string(),
            slice: None,
        })
    }
}
