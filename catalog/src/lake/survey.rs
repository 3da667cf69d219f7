//! What a lake holds, said once when a binary starts. The default lake,
//! `file://./kappa-lake`, depends on the working directory: the log names
//! the folder it resolved to and what was found there, so a gateway started
//! from the wrong directory says so at once.

use std::fmt;

use deltalake::DeltaTableBuilder;
use deltalake::logstore::object_store::ObjectStore;
use deltalake::logstore::object_store::path::Path;
use url::Url;

use super::Lake;
use super::location::lake_url;
use crate::error::{CatalogError, Result};

/// How many names a survey lists before it says how many more there are.
const NAMES_SHOWN: usize = 5;

/// Where a lake is and what is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LakeSurvey {
    /// The lake's location, resolved (a local folder as an absolute path).
    pub url: Url,
    /// What was found there.
    pub contents: LakeContents,
}

/// What a lake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeContents {
    /// A local lake whose folder does not exist (the compactor makes it).
    Missing,
    /// The tables tiered into the lake (`tables/<name>/`) and the tables
    /// defined by SQL on it (`_kappa/tables/<name>.json`), by name.
    Found {
        tiered: Vec<String>,
        defined: Vec<String>,
    },
}

impl Lake {
    /// Where this lake is and what it holds, without creating anything.
    pub async fn survey(&self) -> Result<LakeSurvey> {
        let url = lake_url(&self.location, &[], false)?;
        if url.scheme() == "file" && url.to_file_path().is_ok_and(|folder| !folder.is_dir()) {
            return Ok(LakeSurvey {
                url,
                contents: LakeContents::Missing,
            });
        }
        let unavailable = |e: String| CatalogError::Lake(format!("listing {url}: {e}"));
        let store = DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| unavailable(e.to_string()))?
            .with_storage_options(self.storage_options.clone())
            .build_storage()
            .map_err(|e| unavailable(e.to_string()))?
            .object_store(None);
        let tiered = list(store.as_ref(), "tables")
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .common_prefixes
            .iter()
            .filter_map(|prefix| prefix.filename().map(str::to_string))
            .collect();
        let defined = list(store.as_ref(), "_kappa/tables")
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .objects
            .iter()
            .filter_map(|object| {
                object
                    .location
                    .filename()
                    .and_then(|name| name.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        Ok(LakeSurvey {
            url,
            contents: LakeContents::Found { tiered, defined },
        })
    }
}

/// One level of `folder`, sorted by name.
async fn list(
    store: &dyn ObjectStore,
    folder: &str,
) -> std::result::Result<
    deltalake::logstore::object_store::ListResult,
    deltalake::logstore::object_store::Error,
> {
    let mut listed = store.list_with_delimiter(Some(&Path::from(folder))).await?;
    listed.common_prefixes.sort();
    listed.objects.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(listed)
}

impl fmt::Display for LakeSurvey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_str().trim_end_matches('/');
        match &self.contents {
            LakeContents::Missing => write!(f, "lake {url}: does not exist yet"),
            LakeContents::Found { tiered, defined } if tiered.is_empty() && defined.is_empty() => {
                write!(
                    f,
                    "lake {url}: empty (no tiered tables, no tables defined by SQL)"
                )
            }
            LakeContents::Found { tiered, defined } => write!(
                f,
                "lake {url}: {}, {}",
                counted(tiered, "tiered table", "tiered tables"),
                counted(defined, "table defined by SQL", "tables defined by SQL")
            ),
        }
    }
}

/// `3 tiered tables (a, b, c)`, the names capped at [`NAMES_SHOWN`].
fn counted(names: &[String], one: &str, many: &str) -> String {
    let noun = if names.len() == 1 { one } else { many };
    if names.is_empty() {
        return format!("no {many}");
    }
    let mut shown = names[..names.len().min(NAMES_SHOWN)].join(", ");
    if names.len() > NAMES_SHOWN {
        shown.push_str(&format!(", … {} more", names.len() - NAMES_SHOWN));
    }
    format!("{} {noun} ({shown})", names.len())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[tokio::test]
    async fn a_local_lake_says_where_it_is_and_what_it_holds() {
        let dir = std::env::temp_dir().join(format!(
            "kappa-survey-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let lake = Lake::new(format!("file://{}", dir.display()), HashMap::new());
        let survey = lake.survey().await.unwrap();
        assert_eq!(survey.contents, LakeContents::Missing);
        assert_eq!(
            survey.to_string(),
            format!("lake file://{}: does not exist yet", dir.display())
        );
        assert!(!dir.exists(), "a survey creates nothing");

        std::fs::create_dir_all(&dir).unwrap();
        let survey = lake.survey().await.unwrap();
        assert!(
            survey
                .to_string()
                .ends_with(": empty (no tiered tables, no tables defined by SQL)"),
            "{survey}"
        );

        for table in ["orders", "clicks"] {
            std::fs::create_dir_all(dir.join("tables").join(table).join("_delta_log")).unwrap();
        }
        std::fs::create_dir_all(dir.join("_kappa/tables")).unwrap();
        std::fs::write(dir.join("_kappa/tables/payments.json"), "{}").unwrap();
        let survey = lake.survey().await.unwrap();
        assert_eq!(
            survey.to_string(),
            format!(
                "lake file://{}: 2 tiered tables (clicks, orders), 1 table defined by SQL (payments)",
                dir.display()
            )
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn long_lists_are_cut() {
        let names: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        assert_eq!(
            counted(&names, "table", "tables"),
            "7 tables (t0, t1, t2, t3, t4, … 2 more)"
        );
    }
}
