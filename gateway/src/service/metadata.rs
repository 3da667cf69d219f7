//! The Flight SQL metadata calls (catalogs, schemas, tables, table types,
//! SqlInfo, xDBC types) and the session-option actions; [`super`] routes the
//! trait's calls here.
//!
//! GetTables gives every column of a table's schema its SQL type name,
//! precision and scale as Flight SQL column metadata
//! ([`SqlType::column_metadata`]; nullability is the field's flag): ADBC's
//! driver reports the name as `get_objects`' `xdbc_type_name`, which
//! SQLAlchemy dialects type columns by, and the JDBC driver reads precision
//! and scale.
//!
//! Table types are lower case, `table` and `view`, as ADBC's own drivers
//! (SQLite, PostgreSQL) report them and as the `sqlalchemy-adbc` dialect
//! expects; a GetTables filter matches them in any case, so JDBC tools that
//! ask for `TABLE` and `VIEW` find the same tables.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow_flight::sql::metadata::{GetTablesBuilder, SqlInfoData};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo,
};
use arrow_flight::{Action, FlightDescriptor, FlightInfo, Ticket};
use datafusion::catalog::SchemaProvider;
use datafusion::catalog::information_schema::{INFORMATION_SCHEMA, InformationSchemaProvider};
use datafusion::catalog::{CatalogProviderList, MemoryCatalogProviderList};
use kappa_catalog::{CATALOG, SCHEMA, SYSTEM_SCHEMA, system};
use prost::Message;
use tonic::{Request, Response, Status};

use super::{DoGetStream, KappaFlightSqlService};
use crate::auth::Grants;
use crate::client_types::client_schema;
use crate::error::{catalog_status, datafusion_status, internal, invalid_request};
use crate::flight::{metadata_info, one_batch};
use crate::settings::Settings;
use crate::type_info::XDBC_TYPES;

/// A topic or system table.
pub const TABLE: &str = "table";
/// An `information_schema` view.
pub const VIEW: &str = "view";

impl KappaFlightSqlService {
    pub(super) fn catalogs(&self, query: CommandGetCatalogs) -> Response<DoGetStream> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        let schema = builder.schema();
        Response::new(one_batch(builder.build(), schema))
    }

    /// `default` (the topics), `information_schema`, and `system` when the
    /// caller was granted any of its tables.
    pub(super) fn db_schemas(
        &self,
        query: CommandGetDbSchemas,
        grants: &Grants,
    ) -> Response<DoGetStream> {
        let mut builder = query.into_builder();
        for schema in [SCHEMA, INFORMATION_SCHEMA] {
            builder.append(CATALOG, schema);
        }
        if system::tables()
            .iter()
            .any(|(name, _)| grants.allows(SYSTEM_SCHEMA, name))
        {
            builder.append(CATALOG, SYSTEM_SCHEMA);
        }
        let schema = builder.schema();
        Response::new(one_batch(builder.build(), schema))
    }

    /// Every table the caller may read, with column metadata when the
    /// schema is asked for.
    pub(super) async fn tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        // Only what the caller may read is listed.
        let grants = Settings::of_request(&request)?.grants;
        let wanted = TypeFilter::new(&query.table_types);

        let mut rows: Vec<(&str, String, &str, SchemaRef)> = Vec::new();
        if wanted.allows(TABLE) {
            self.schema
                .context()
                .refresh_if_stale()
                .await
                .map_err(|e| catalog_status(&e))?;
            let mut names = self.schema.table_names();
            names.retain(|name| grants.allows(SCHEMA, name));
            // An exact name (what `adbc_get_table_schema` sends) may be a
            // topic created since the last refresh: look it up directly.
            if let Some(name) = query
                .table_name_filter_pattern
                .as_deref()
                .and_then(exact_name)
                && !names.contains(&name)
                && grants.allows(SCHEMA, &name)
            {
                names.push(name);
            }
            for name in names {
                let table = self
                    .schema
                    .table(&name)
                    .await
                    .map_err(|e| datafusion_status(&e))?;
                if let Some(table) = table {
                    rows.push((SCHEMA, name, TABLE, client_schema(&table.schema())));
                }
            }
            for (name, schema) in system::tables() {
                if grants.allows(SYSTEM_SCHEMA, name) {
                    rows.push((
                        SYSTEM_SCHEMA,
                        name.to_string(),
                        TABLE,
                        client_schema(&schema),
                    ));
                }
            }
        }
        if wanted.allows(VIEW) {
            // The views describe only what the caller may read, so everyone
            // may list them.
            let views = information_schema();
            for name in views.table_names() {
                if let Some(view) = views
                    .table(&name)
                    .await
                    .map_err(|e| datafusion_status(&e))?
                {
                    rows.push((
                        INFORMATION_SCHEMA,
                        name,
                        VIEW,
                        client_schema(&view.schema()),
                    ));
                }
            }
        }

        let mut builder = GetTablesBuilder::new(
            query.catalog,
            query.db_schema_filter_pattern,
            query.table_name_filter_pattern,
            Vec::<String>::new(),
            query.include_schema,
        );
        for (schema_name, name, kind, schema) in rows {
            builder
                .append(CATALOG, schema_name, &name, kind, &schema)
                .map_err(internal)?;
        }
        let schema = builder.schema();
        Ok(Response::new(one_batch(builder.build(), schema)))
    }

    pub(super) fn table_types(&self, query: CommandGetTableTypes) -> Response<DoGetStream> {
        let mut builder = query.into_builder();
        builder.append(TABLE);
        builder.append(VIEW);
        let schema = builder.schema();
        Response::new(one_batch(builder.build(), schema))
    }

    pub(super) fn sql_info(&self, query: CommandGetSqlInfo) -> Response<DoGetStream> {
        let builder = query.into_builder(self.sql_info_answers());
        let schema = builder.schema();
        Response::new(one_batch(builder.build(), schema))
    }

    pub(super) fn xdbc_type_info(&self, query: CommandGetXdbcTypeInfo) -> Response<DoGetStream> {
        let builder = query.into_builder(&XDBC_TYPES);
        let schema = builder.schema();
        Response::new(one_batch(builder.build(), schema))
    }
}

/// FlightInfo for GetSqlInfo.
pub(super) fn sql_info_flight_info(
    query: CommandGetSqlInfo,
    answers: &SqlInfoData,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    metadata_info(
        &query.clone().into_builder(answers).schema(),
        &query,
        request,
    )
}

/// FlightInfo for GetXdbcTypeInfo.
pub(super) fn xdbc_type_info_flight_info(
    query: CommandGetXdbcTypeInfo,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    metadata_info(&query.into_builder(&XDBC_TYPES).schema(), &query, request)
}

/// `information_schema`'s views; their schemas do not depend on the
/// catalogs they describe.
fn information_schema() -> InformationSchemaProvider {
    let catalogs: Arc<dyn CatalogProviderList> = Arc::new(MemoryCatalogProviderList::new());
    InformationSchemaProvider::new(catalogs)
}

/// GetTables' table type filter, matched without regard to case (JDBC tools
/// ask for `TABLE`, ADBC's for `table`); empty lets every type through.
struct TypeFilter(Vec<String>);

impl TypeFilter {
    fn new(types: &[String]) -> Self {
        Self(types.iter().map(|t| t.to_lowercase()).collect())
    }

    fn allows(&self, kind: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|t| t == kind)
    }
}

/// The one name a LIKE pattern without `%` most likely means, to look up a
/// topic created since the last refresh: `\_` and `\%` are escaped literals
/// (as JDBC sends them), and a bare `_` is taken literally too (ADBC sends
/// table names unescaped). The builder still filters every candidate by the
/// real pattern, so a wrong guess only costs one lookup.
fn exact_name(pattern: &str) -> Option<String> {
    let mut name = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => name.push(chars.next()?),
            '%' => return None,
            c => name.push(c),
        }
    }
    Some(name)
}

// ---- Session options ----------------------------------------------------
//
// Flight's session-option actions (Flight.proto), which ADBC's driver uses
// for `adbc_current_catalog` / `adbc_current_db_schema`. arrow-flight 59 has
// no types for them, so the messages are declared here. kappa keeps no
// session: the current catalog and schema are always `kafka` and `default`,
// and setting them to anything else is refused per option.

/// `GetSessionOptions`.
pub(super) const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
/// `SetSessionOptions`.
pub(super) const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
/// `CloseSession`.
pub(super) const CLOSE_SESSION: &str = "CloseSession";

#[derive(Clone, PartialEq, Message)]
struct SessionOptionValue {
    #[prost(oneof = "session_option_value::OptionValue", tags = "1, 2, 3, 4, 5")]
    option_value: Option<session_option_value::OptionValue>,
}

mod session_option_value {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringListValue {
        #[prost(string, repeated, tag = "1")]
        pub values: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum OptionValue {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(sfixed64, tag = "3")]
        Int64(i64),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(message, tag = "5")]
        StringList(StringListValue),
    }
}

#[derive(Clone, PartialEq, Message)]
struct SessionOptions {
    #[prost(map = "string, message", tag = "1")]
    session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, PartialEq, Message)]
struct SetSessionOptionsError {
    #[prost(int32, tag = "1")]
    value: i32,
}

#[derive(Clone, PartialEq, Message)]
struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    errors: HashMap<String, SetSessionOptionsError>,
}

#[derive(Clone, PartialEq, Message)]
struct CloseSessionResult {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `SetSessionOptionsResult.ErrorValue`.
const INVALID_NAME: i32 = 1;
const INVALID_VALUE: i32 = 2;
/// `CloseSessionResult.Status.NOT_CLOSEABLE`: there is no session.
const NOT_CLOSEABLE: i32 = 3;

fn string_option(value: &str) -> SessionOptionValue {
    SessionOptionValue {
        option_value: Some(session_option_value::OptionValue::String(value.to_string())),
    }
}

/// The session options: the current catalog and schema.
fn current_options() -> HashMap<String, SessionOptionValue> {
    HashMap::from([
        ("catalog".to_string(), string_option(CATALOG)),
        ("schema".to_string(), string_option(SCHEMA)),
    ])
}

/// The answer body of a session action.
pub(super) fn session_action(action: &Action) -> Result<Vec<u8>, Status> {
    match action.r#type.as_str() {
        GET_SESSION_OPTIONS => Ok(SessionOptions {
            session_options: current_options(),
        }
        .encode_to_vec()),
        SET_SESSION_OPTIONS => {
            let request = SessionOptions::decode(action.body.clone())
                .map_err(|e| invalid_request(format!("SetSessionOptions: {e}")))?;
            let current = current_options();
            let errors = request
                .session_options
                .into_iter()
                .filter_map(|(name, value)| {
                    let error = match current.get(&name) {
                        None => INVALID_NAME,
                        Some(now) if *now == value => return None,
                        Some(_) => INVALID_VALUE,
                    };
                    Some((name, SetSessionOptionsError { value: error }))
                })
                .collect();
            Ok(SetSessionOptionsResult { errors }.encode_to_vec())
        }
        CLOSE_SESSION => Ok(CloseSessionResult {
            status: NOT_CLOSEABLE,
        }
        .encode_to_vec()),
        other => Err(invalid_request(format!("unknown action '{other}'"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_unescape_and_wildcards_do_not_match() {
        assert_eq!(exact_name("orders").as_deref(), Some("orders"));
        assert_eq!(exact_name(r"web\_clicks").as_deref(), Some("web_clicks"));
        assert_eq!(exact_name("web_clicks").as_deref(), Some("web_clicks"));
        assert_eq!(exact_name("ord%"), None);
    }

    #[test]
    fn table_type_filters_ignore_case() {
        assert!(TypeFilter::new(&["TABLE".into()]).allows(TABLE));
        assert!(!TypeFilter::new(&["TABLE".into()]).allows(VIEW));
        assert!(TypeFilter::new(&[]).allows(VIEW));
    }

    #[test]
    fn session_options_answer_the_current_catalog_and_schema() {
        let action = |kind: &str, body: Vec<u8>| Action {
            r#type: kind.into(),
            body: body.into(),
        };
        let got = session_action(&action(GET_SESSION_OPTIONS, vec![])).unwrap();
        let got = SessionOptions::decode(got.as_slice()).unwrap();
        assert_eq!(got.session_options["schema"], string_option("default"));

        let set = SessionOptions {
            session_options: HashMap::from([
                ("catalog".to_string(), string_option("kafka")),
                ("schema".to_string(), string_option("system")),
                ("color".to_string(), string_option("red")),
            ]),
        };
        let result = session_action(&action(SET_SESSION_OPTIONS, set.encode_to_vec())).unwrap();
        let result = SetSessionOptionsResult::decode(result.as_slice()).unwrap();
        assert_eq!(result.errors.len(), 2);
        assert_eq!(result.errors["schema"].value, INVALID_VALUE);
        assert_eq!(result.errors["color"].value, INVALID_NAME);
    }
}
