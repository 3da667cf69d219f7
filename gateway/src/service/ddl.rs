//! The two statements that change the catalog: `CREATE EXTERNAL TABLE …
//! STORED AS KAFKA` and `DROP TABLE`. Each runs when it is planned (as
//! DataFusion runs DDL), against the definitions kept on the lake, and
//! answers with no rows. Every other DDL stays refused by the read-only
//! planning rules, and so does any `STORED AS` but `KAFKA`: kappa never
//! reads local files or other locations.
//!
//! A prepared statement runs when executed, not when prepared: DB-API
//! drivers (ADBC's among them) prepare every statement they execute.

use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use kappa_catalog::SCHEMA;
use kappa_catalog::TableDefinition;
use kappa_catalog::definitions::infer::infer_json_columns;
use kappa_catalog::definitions::sql::{from_create, table_name};
use tonic::Status;

use super::KappaFlightSqlService;
use crate::error::{catalog_status, datafusion_status};
use crate::settings::Settings;

/// A statement that changes the catalog, parsed and checked.
#[derive(Debug)]
pub(super) enum Definition {
    /// `CREATE EXTERNAL TABLE … STORED AS KAFKA`.
    Create {
        definition: Box<TableDefinition>,
        infer_json: Option<usize>,
        if_not_exists: bool,
    },
    /// `DROP TABLE`.
    Drop { names: Vec<String>, if_exists: bool },
}

impl KappaFlightSqlService {
    /// `sql` as a [`Definition`] the caller may run; `None` for any other
    /// statement, or SQL that does not parse (planning then reports the
    /// parser's message).
    pub(super) fn definition(
        &self,
        sql: &str,
        settings: &Settings,
    ) -> Result<Option<Definition>, Status> {
        let Ok(mut statements) = DFParser::parse_sql(sql) else {
            return Ok(None);
        };
        if statements.len() != 1 {
            return Ok(None);
        }
        let definition = match statements.pop_front() {
            Some(DfStatement::CreateExternalTable(create)) => {
                let asked = from_create(&create).map_err(|e| catalog_status(&e))?;
                Definition::Create {
                    definition: Box::new(asked.definition),
                    infer_json: asked.infer_json,
                    if_not_exists: create.if_not_exists,
                }
            }
            Some(DfStatement::Statement(statement)) => match *statement {
                Statement::Drop {
                    object_type: ObjectType::Table,
                    if_exists,
                    names,
                    ..
                } => Definition::Drop {
                    names: names
                        .iter()
                        .map(table_name)
                        .collect::<Result<_, _>>()
                        .map_err(|e| catalog_status(&e))?,
                    if_exists,
                },
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let names = match &definition {
            Definition::Create { definition, .. } => std::slice::from_ref(&definition.name),
            Definition::Drop { names, .. } => names.as_slice(),
        };
        for name in names {
            if !settings.define.allows(SCHEMA, name) {
                return Err(Status::permission_denied(format!(
                    "user '{}' may not create or drop table '{name}' (`define` in the users file)",
                    settings.caller
                )));
            }
        }
        Ok(Some(definition))
    }

    /// Runs `definition` and returns its answer: no rows.
    pub(super) async fn run_definition(
        &self,
        ctx: &SessionContext,
        definition: Definition,
        settings: &Settings,
    ) -> Result<DataFrame, Status> {
        match definition {
            Definition::Create {
                mut definition,
                infer_json,
                if_not_exists,
            } => {
                let context = self.schema.context();
                if let Some(records) = infer_json {
                    let topic = definition.topic.clone().unwrap_or_default();
                    let (columns, sampled) = infer_json_columns(context.client(), &topic, records)
                        .await
                        .map_err(|e| catalog_status(&e))?;
                    tracing::info!(table = %definition.name, %topic, sampled, %columns, "inferred JSON columns");
                    definition.columns = Some(columns);
                }
                context
                    .create_table(*definition, &settings.caller, if_not_exists)
                    .await
                    .map_err(|e| catalog_status(&e))?
            }
            Definition::Drop { names, if_exists } => {
                for name in &names {
                    self.schema
                        .context()
                        .drop_table(name, if_exists)
                        .await
                        .map_err(|e| catalog_status(&e))?;
                }
            }
        }
        let empty = LogicalPlanBuilder::empty(false)
            .build()
            .map_err(|e| datafusion_status(&e))?;
        Ok(DataFrame::new(ctx.state(), empty))
    }
}
