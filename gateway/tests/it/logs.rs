//! `--log-format json`: every log line is one JSON object, and each query
//! ends with one line carrying its id, caller, SQL, rows, bytes, time and
//! outcome.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::support::{DEADLINE, TestRecord, brokers, create_topic, produce, unique};

#[tokio::test(flavor = "multi_thread")]
async fn each_query_is_one_json_line_with_its_numbers() {
    let topic = unique("logs");
    create_topic(&topic, 1).await;
    produce(
        &topic,
        &[TestRecord::value(0, "a"), TestRecord::value(0, "b")],
    )
    .await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kappa-gateway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--brokers", &brokers()])
        .args(["--log-format", "json"])
        .env("KAPPA_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(DEADLINE, stdout.next_line())
        .await
        .expect("in time")
        .unwrap()
        .unwrap()
        .strip_prefix("listening on ")
        .expect("the address line")
        .to_string();
    let mut stderr = child.stderr.take().unwrap();
    let logged = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let gateway = crate::support::Gateway::client_for(&addr).await;
    let mut client = gateway;
    let ok = format!("SELECT _offset FROM \"{topic}\"");
    assert_eq!(client.query(&ok).await.expect("runs").rows(), 2);
    let failing = format!("SELECT 1 / (_offset - _offset) FROM \"{topic}\"");
    client.query(&failing).await.expect_err("division by zero");
    drop(client);

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let exit = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    let text = logged.await.unwrap();

    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let query = |sql: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["sql"] == sql)
            .unwrap_or_else(|| panic!("no line for {sql} in\n{text}"))
            .clone()
    };
    let done = &query(&ok)["fields"];
    assert_eq!(done["message"], "query done");
    assert_eq!(done["outcome"], "ok");
    assert_eq!(done["user"], "anonymous");
    assert_eq!(done["rows"], 2);
    assert!(done["bytes"].as_u64().unwrap() > 0, "{done}");
    assert!(done["elapsed_ms"].is_u64(), "{done}");
    assert_eq!(done["id"].as_str().unwrap().len(), 16, "{done}");
    let failed = &query(&failing)["fields"];
    assert_eq!(failed["message"], "query failed");
    assert_eq!(failed["outcome"], "error");
    assert_eq!(failed["code"], "InvalidArgument");
    assert!(
        failed["error"].as_str().unwrap().contains("zero"),
        "{failed}"
    );
    assert_ne!(done["id"], failed["id"]);
}
