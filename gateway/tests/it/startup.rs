//! What the gateway says when it starts, or cannot: the lake it resolved,
//! why it cannot listen, errors as one line of causes. No broker needed.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::{DEADLINE, unique};

/// The gateway binary in `dir`, with none of kappa's environment variables
/// but `env`, on a broker that is not there.
fn gateway(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kappa-gateway"));
    command
        .current_dir(dir)
        .arg("serve")
        .args(["--brokers", "127.0.0.1:1"])
        .args(args)
        .kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("KAPPA_") || name == "RUST_BACKTRACE" || name == "RUST_LIB_BACKTRACE" {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("kappa-startup"));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    std::fs::canonicalize(dir).expect("canonical")
}

/// Runs `command`, expecting it to exit with code 1: its stderr.
async fn refused(mut command: Command) -> String {
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("exits in time")
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_in_use_is_named_with_the_os_reason() {
    let dir = scratch();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let stderr = refused(gateway(
        &dir,
        &["--listen", &addr],
        &[("KAPPA_LOG", "warn")],
    ))
    .await;
    let line = stderr
        .lines()
        .find(|l| l.contains("cannot listen on"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(
        line.split(" (").next().unwrap(),
        format!("error: cannot listen on {addr}: Address already in use"),
        "{stderr}"
    );
    assert!(line.contains("os error"), "{line}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_errors_are_one_line_of_causes_with_no_backtrace() {
    let dir = scratch();
    for backtrace in ["1", "full"] {
        let stderr = refused(gateway(
            &dir,
            &["--listen", "127.0.0.1:0", "--config", "no-such-file.toml"],
            &[
                ("KAPPA_LOG", "off"),
                ("RUST_BACKTRACE", backtrace),
                ("RUST_LIB_BACKTRACE", backtrace),
            ],
        ))
        .await;
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(
            stderr.contains("no-such-file.toml: No such file"),
            "{stderr}"
        );
        assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The first line of the gateway's log that contains `wanted`.
async fn logged(dir: &std::path::Path, wanted: &str) -> String {
    let mut child = gateway(dir, &["--listen", "127.0.0.1:0"], &[("KAPPA_LOG", "info")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kappa-gateway");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if line.contains(wanted) {
                return Some(line);
            }
            seen.push(line);
        }
        None
    })
    .await;
    child.kill().await.expect("kill");
    match found {
        Ok(Some(line)) => line,
        _ => panic!("no '{wanted}' in the log:\n{}", seen.join("\n")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_lake_is_named_with_what_it_holds() {
    let dir = scratch();
    // The default lake, `file://./kappa-lake`, is in the working directory.
    let lake = format!("lake file://{}/kappa-lake: ", dir.display());
    let line = logged(&dir, "lake file://").await;
    assert!(
        line.ends_with(&format!("{lake}does not exist yet")),
        "{line}"
    );
    for table in ["orders", "clicks"] {
        std::fs::create_dir_all(dir.join("kappa-lake/tables").join(table).join("_delta_log"))
            .unwrap();
    }
    let line = logged(&dir, "lake file://").await;
    assert!(
        line.ends_with(&format!(
            "{lake}2 tiered tables (clicks, orders), no tables defined by SQL"
        )),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
