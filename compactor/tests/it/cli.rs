//! What the binary says when it is asked for something it cannot do, and
//! what `check` shows. None of these needs a broker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A folder of its own under the system's temporary folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the compactor in `dir` with `args` and none of kappa's environment
/// variables, but `env`.
fn compactor(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kappa-compactor"));
    command.current_dir(dir).args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("KAPPA_") || name == "RUST_BACKTRACE" || name == "RUST_LIB_BACKTRACE" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("runs kappa-compactor")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn errors_are_one_line_of_causes_with_no_backtrace() {
    let scratch = Scratch::new("kappa-compactor-error");
    for backtrace in ["0", "1", "full"] {
        let output = compactor(
            &scratch.0,
            &["check", "--config", "no-such-file.toml"],
            &[
                ("RUST_BACKTRACE", backtrace),
                ("RUST_LIB_BACKTRACE", backtrace),
            ],
        );
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(
            err.contains("no-such-file.toml") && err.contains("No such file"),
            "{err}"
        );
        assert!(
            !err.to_lowercase().contains("backtrace"),
            "RUST_BACKTRACE={backtrace}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn run_without_a_schedule_names_both_ways_to_give_one() {
    let scratch = Scratch::new("kappa-compactor-run");
    let output = compactor(&scratch.0, &["run"], &[]);
    let err = stderr(&output);
    assert!(!output.status.success());
    assert!(err.contains("--once") && err.contains("--every"), "{err}");
    // And the two are still exclusive.
    let output = compactor(&scratch.0, &["run", "--once", "--every", "5m"], &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot be used with"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_shows_the_schema_each_table_is_tiered_with() {
    let scratch = Scratch::new("kappa-compactor-check");
    let config = scratch.file(
        "kappa.toml",
        "[[tables]]\nname = \"orders\"\nformat = \"json\"\n\
         columns = \"id BIGINT, customer VARCHAR, amount DECIMAL(10, 2), placed_at TIMESTAMP\"\n",
    );
    let output = compactor(
        &scratch.0,
        &["check", "--config", config.to_str().unwrap()],
        &[],
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["orders", "<-", "topic", "orders", "(json)"],
        "{out}"
    );
    for column in [
        vec!["_partition", "Int32", "NOT", "NULL"],
        vec!["_offset", "Int64", "NOT", "NULL"],
        vec!["id", "Int64"],
        vec!["customer", "Utf8"],
        vec!["amount", "Decimal128(10,", "2)"],
        vec!["_error", "Utf8"],
        vec!["_date", "Date32"],
    ] {
        assert!(lines.contains(&column), "{column:?} not in\n{out}");
    }
}

#[test]
fn check_points_into_the_column_list_as_written() {
    let scratch = Scratch::new("kappa-compactor-columns");
    let config = scratch.file(
        "kappa.toml",
        "[[tables]]\nname = \"orders\"\nformat = \"json\"\ncolumns = \"id BIGINT, amount DECIMAL(10,\"\n",
    );
    let output = compactor(
        &scratch.0,
        &["check", "--config", config.to_str().unwrap()],
        &[],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("table 'orders': columns: "), "{err}");
    assert!(err.contains("at Line: 1, Column: 30"), "{err}");
}

#[test]
fn the_lake_is_named_with_what_it_holds_at_start() {
    let scratch = Scratch::new("kappa-compactor-lake");
    let lake = std::fs::canonicalize(&scratch.0)
        .unwrap()
        .join("kappa-lake");
    // The default lake, `file://./kappa-lake`, is in the working directory.
    let output = compactor(
        &scratch.0,
        &["vacuum", "--table", "orders"],
        &[("KAPPA_LOG", "info")],
    );
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "lake file://{}: does not exist yet",
            lake.display()
        )),
        "{err}"
    );
    std::fs::create_dir_all(lake.join("tables/orders/_delta_log")).unwrap();
    let output = compactor(
        &scratch.0,
        &["vacuum", "--table", "orders"],
        &[("KAPPA_LOG", "info")],
    );
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "lake file://{}: 1 tiered table (orders), no tables defined by SQL",
            lake.display()
        )),
        "{err}"
    );
}
