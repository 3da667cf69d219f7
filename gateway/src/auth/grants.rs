//! Which tables a user may read, and a catalog that shows a user only
//! those: listing (GetTables, `information_schema`, `SHOW TABLES`) and
//! planning go through the same filter, so a table a user may not read is
//! neither listed nor readable.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, SchemaProvider, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use kappa_catalog::SCHEMA;
use kappa_catalog::changelog::LatestTable;
use kappa_catalog::tail::TailTable;

use super::AuthError;

/// The table patterns a user was granted; `None` grants every table (no
/// users configured: anonymous access).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(Option<Vec<String>>);

impl Grants {
    /// Every table.
    pub fn all() -> Self {
        Self(None)
    }

    /// The tables matching `patterns` (`orders`, `pay*`, `system.*`,
    /// `kafka.default.orders`); a pattern without a schema names tables of
    /// `default`, the topics.
    pub fn only(patterns: &[String]) -> Self {
        Self(Some(patterns.iter().map(|p| normalize(p)).collect()))
    }

    /// Whether every table is granted.
    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    /// Whether `table` of `schema` may be read.
    pub fn allows(&self, schema: &str, table: &str) -> bool {
        let Some(patterns) = &self.0 else {
            return true;
        };
        let name = format!("{schema}.{table}");
        patterns.iter().any(|pattern| glob(pattern, &name))
    }
}

/// `schema.table` for a pattern: `kafka.` dropped, `default.` added.
fn normalize(pattern: &str) -> String {
    let pattern = pattern.trim();
    let pattern = pattern.strip_prefix("kafka.").unwrap_or(pattern);
    if pattern.contains('.') {
        pattern.to_string()
    } else {
        format!("{SCHEMA}.{pattern}")
    }
}

/// `*` matches any run of characters (dots included); the rest literally.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The `kafka` catalog as a user sees it.
#[derive(Debug)]
pub struct GrantedCatalog {
    inner: Arc<dyn CatalogProvider>,
    grants: Grants,
}

impl GrantedCatalog {
    /// `inner` filtered by `grants`.
    pub fn new(inner: Arc<dyn CatalogProvider>, grants: Grants) -> Self {
        Self { inner, grants }
    }
}

impl CatalogProvider for GrantedCatalog {
    fn schema_names(&self) -> Vec<String> {
        self.inner.schema_names()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let inner = self.inner.schema(name)?;
        Some(Arc::new(GrantedSchema {
            inner,
            name: name.to_string(),
            grants: self.grants.clone(),
        }))
    }
}

/// One schema as a user sees it.
#[derive(Debug)]
struct GrantedSchema {
    inner: Arc<dyn SchemaProvider>,
    name: String,
    grants: Grants,
}

#[async_trait]
impl SchemaProvider for GrantedSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.retain(|table| self.grants.allows(&self.name, table));
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if self.grants.allows(&self.name, name) {
            return self.inner.table(name).await;
        }
        // Not granted. A name that is no table goes on unresolved, so a
        // table function of that name (`tail(…)`) is still found; an
        // existing table is refused.
        match self.inner.table(name).await? {
            None => Ok(None),
            Some(_) => Err(DataFusionError::External(Box::new(AuthError::NotGranted(
                format!("{}.{name}", self.name),
            )))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.grants.allows(&self.name, name) && self.inner.table_exist(name)
    }
}

/// `tail(table, …)` or `latest(table, …)` for a user: only tables they were
/// granted.
#[derive(Debug)]
pub struct GrantedTail {
    inner: Arc<dyn TableFunctionImpl>,
    grants: Grants,
}

impl GrantedTail {
    /// `inner` (the `tail` function) restricted to `grants`.
    pub fn new(inner: Arc<dyn TableFunctionImpl>, grants: Grants) -> Self {
        Self { inner, grants }
    }
}

impl TableFunctionImpl for GrantedTail {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let table = self.inner.call_with_args(args)?;
        let table_ref = table.as_ref() as &dyn Any;
        let name = table_ref
            .downcast_ref::<TailTable>()
            .map(|t| t.name().to_string())
            .or_else(|| {
                table_ref
                    .downcast_ref::<LatestTable>()
                    .map(|t| t.name().to_string())
            })
            .ok_or_else(|| {
                DataFusionError::Internal("a table function returned another kind of table".into())
            })?;
        if self.grants.allows(SCHEMA, &name) {
            Ok(table)
        } else {
            Err(DataFusionError::External(Box::new(AuthError::NotGranted(
                format!("{SCHEMA}.{name}"),
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_topics_by_default_and_other_schemas_explicitly() {
        let grants = Grants::only(&["orders".into(), "pay*".into(), "system.*".into()]);
        assert!(grants.allows("default", "orders"));
        assert!(
            !grants.allows("default", "orders_eu"),
            "no implicit prefix match"
        );
        assert!(grants.allows("default", "payments") && grants.allows("default", "pay"));
        assert!(grants.allows("system", "partitions"));
        assert!(!grants.allows("default", "secrets"));
        let full = Grants::only(&["kafka.default.a*z".into()]);
        assert!(full.allows("default", "abcz") && full.allows("default", "az"));
        assert!(!full.allows("default", "abc") && !full.allows("system", "az"));
        assert!(Grants::all().allows("anything", "at all"));
        assert!(
            !Grants::only(&[]).allows("default", "orders"),
            "no patterns, no tables"
        );
    }
}
