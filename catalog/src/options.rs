//! `kappa.*` settings a query can change: a DataFusion config extension, so
//! they are set like any DataFusion option (`ConfigOptions::set`) and read
//! by the table providers from the session that plans the query.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

extensions_options! {
    /// Per-query settings of kappa's tables.
    pub struct KappaOptions {
        /// Let a query over a table with a lake tier through when Kafka
        /// deleted records before they were tiered (a real gap in history):
        /// it then returns what the lake and Kafka still hold instead of
        /// failing with `DataLoss`.
        pub allow_gaps: bool, default = false
        /// A snapshot token (`snapshot('t')`, or a FlightInfo's
        /// `app_metadata`): every table it names reads that state again.
        pub snapshot: Option<String>, default = None
    }
}

impl ConfigExtension for KappaOptions {
    const PREFIX: &'static str = "kappa";
}

impl KappaOptions {
    /// Lets a query of `table` through `gaps` in its history (each
    /// `partition p: offsets a..b`) only with `allow_gaps`, logged; without
    /// it they fail the query with `HistoryGap` (gRPC `DataLoss`).
    pub fn admit_gaps(&self, table: &str, gaps: &[String]) -> crate::Result<()> {
        if gaps.is_empty() {
            return Ok(());
        }
        let detail = gaps.join(", ");
        if !self.allow_gaps {
            return Err(crate::CatalogError::HistoryGap {
                table: table.to_string(),
                detail,
            });
        }
        tracing::warn!(
            table,
            gaps = detail,
            "reading past a gap in history (kappa.allow_gaps)"
        );
        Ok(())
    }

    /// The settings of `options`, or the defaults where the session did not
    /// register the extension.
    pub fn from_config(options: &datafusion::config::ConfigOptions) -> Self {
        options
            .extensions
            .get::<KappaOptions>()
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::config::ConfigOptions;

    #[test]
    fn settings_are_set_by_name_and_unknown_ones_refused() {
        let mut options = ConfigOptions::default();
        options.extensions.insert(KappaOptions::default());
        assert!(!KappaOptions::from_config(&options).allow_gaps);
        options.set("kappa.allow_gaps", "true").unwrap();
        assert!(KappaOptions::from_config(&options).allow_gaps);
        let error = options.set("kappa.allow_gapz", "true").unwrap_err();
        assert!(error.to_string().contains("allow_gapz"), "{error}");
        assert!(options.set("kappa.allow_gaps", "maybe").is_err());
    }
}
