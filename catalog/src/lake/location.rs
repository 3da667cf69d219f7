//! Where a table's Delta files live: `<lake>/tables/<table>/`, and how its
//! watermarks are named.

use std::path::Path;

use url::Url;

use crate::error::{CatalogError, Result};

/// The Delta `txn` app id that holds `table`'s watermark for `partition`:
/// the next offset to tier, committed with the files holding the records
/// below it.
pub fn app_id(table: &str, partition: i32) -> String {
    format!("kappa/{table}/{partition}")
}

/// The Delta table location of `table` under the lake `lake`: a local
/// folder, a `file://` URL (relative paths are relative to the working
/// directory, so the gateway's default `file://./kappa-lake` works), or an
/// object-store URL. With `create`, a local folder is made if missing (the
/// compactor writes there; the gateway only looks).
pub fn table_url(lake: &str, table: &str, create: bool) -> Result<Url> {
    lake_url(lake, &["tables", table], create)
}

/// Where the compactor keeps the latest row of each key of changelog table
/// `table` (derived from its history at [`table_url`]):
/// `<lake>/latest/<table>/`. With `create`, a local folder is made if missing.
pub fn latest_url(lake: &str, table: &str, create: bool) -> Result<Url> {
    lake_url(lake, &["latest", table], create)
}

/// The Delta `txn` app id, in a table of latest rows, that marks them as
/// derived from the history table whose Delta table id is `history_id`
/// (its version: the history version last read). A history table deleted
/// and created again has another id, so rows of the old one are never
/// taken for the new one's.
pub fn latest_source_id(history_id: &str) -> String {
    format!("kappa-latest/{history_id}")
}

/// The Delta `txn` app id, in a table of latest rows, of `partition`'s
/// watermark: the latest rows hold every record of the history table
/// `history_id` below it.
pub fn latest_app_id(history_id: &str, partition: i32) -> String {
    format!("kappa-latest/{history_id}/{partition}")
}

/// Where kappa keeps what is not a table under the lake `lake`:
/// `<lake>/_kappa/` (the definitions made by SQL). A local folder is made if
/// missing, as it is written to.
pub fn definitions_url(lake: &str) -> Result<Url> {
    lake_url(lake, &["_kappa"], true)
}

/// The folder `<lake>/<parts…>/` as a URL (a local folder made if
/// missing with `create`).
pub(crate) fn lake_url(lake: &str, parts: &[&str], create: bool) -> Result<Url> {
    let bad = |why: String| CatalogError::Config(format!("lake location '{lake}': {why}"));
    let local = match lake.strip_prefix("file://") {
        Some(path) => Some(path),
        None if !lake.contains("://") => Some(lake),
        None => None,
    };
    match local {
        Some(path) => {
            let mut folder =
                std::path::absolute(Path::new(path)).map_err(|e| bad(e.to_string()))?;
            for part in parts {
                folder.push(part);
            }
            if create {
                std::fs::create_dir_all(&folder).map_err(|e| bad(e.to_string()))?;
            }
            Url::from_directory_path(&folder).map_err(|()| bad("not an absolute path".into()))
        }
        None => {
            // `<lake>/` itself (no parts) must not end in `//`: an object
            // store refuses the empty path segment.
            let mut url = lake.trim_end_matches('/').to_string();
            for part in parts {
                url.push('/');
                url.push_str(part);
            }
            url.push('/');
            Url::parse(&url).map_err(|e| bad(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_store_lake_is_one_folder_with_no_empty_segment() {
        for lake in ["s3://bucket/lake", "s3://bucket/lake/"] {
            assert_eq!(
                lake_url(lake, &[], false).unwrap().as_str(),
                "s3://bucket/lake/"
            );
            assert_eq!(
                lake_url(lake, &["tables", "orders"], false)
                    .unwrap()
                    .as_str(),
                "s3://bucket/lake/tables/orders/"
            );
        }
    }

    #[test]
    fn relative_file_urls_resolve_against_the_working_directory() {
        let dir = std::env::temp_dir().join(format!("kappa-lake-test-{}", std::process::id()));
        let url = table_url(&format!("file://{}", dir.display()), "orders", true).unwrap();
        assert_eq!(url.scheme(), "file");
        assert!(url.path().ends_with("/tables/orders/"), "{url}");
        assert!(dir.join("tables/orders").is_dir());
        let plain = table_url(dir.to_str().unwrap(), "orders", false).unwrap();
        assert_eq!(plain, url);
        std::fs::remove_dir_all(dir).unwrap();
        let s3 = table_url("s3://bucket/lake/", "t", false).unwrap();
        assert_eq!(s3.as_str(), "s3://bucket/lake/tables/t/");
    }
}
