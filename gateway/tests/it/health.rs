//! The gRPC health service on the Flight port: NOT_SERVING until the topic
//! list has been read, SERVING after, asked without credentials when
//! sign-in is on; and `kappa-gateway healthcheck`, which exits 0 or 1 on it.

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{DEADLINE, Gateway, health_status, unique};

const FLIGHT: &str = "arrow.flight.protocol.FlightService";

/// `kappa-gateway healthcheck --address addr`: its exit code and output.
async fn healthcheck(addr: &str) -> (Option<i32>, String) {
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kappa-gateway"))
            .args(["healthcheck", "--address", addr])
            .output(),
    )
    .await
    .expect("exits in time")
    .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn not_serving_while_the_brokers_were_never_reached() {
    // Nothing listens on port 1: the topic list is never read.
    let gateway = Gateway::start_with(None, "127.0.0.1:1".into()).await;
    for service in ["", FLIGHT] {
        assert_eq!(
            health_status(&gateway.addr, service).await.unwrap(),
            ServingStatus::NotServing,
            "service '{service}'"
        );
    }
    let (code, text) = healthcheck(&gateway.addr).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("NOT_SERVING"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serving_once_topics_are_listed_and_asked_without_sign_in() {
    let users = std::env::temp_dir().join(format!("{}.toml", unique("kappa-users")));
    std::fs::write(&users, "[[users]]\nname = \"reader\"\ntables = [\"*\"]\n").unwrap();
    let gateway = Gateway::start_with_args(None, &["--users", users.to_str().unwrap()]).await;
    // Sign-in is on: a Flight call without credentials is refused…
    let refused = gateway
        .client()
        .await
        .query("SELECT 1")
        .await
        .expect_err("no credentials");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
    // …and the health service answers anyway, SERVING once the topic list
    // has been read.
    let serving = tokio::time::timeout(DEADLINE, async {
        loop {
            match health_status(&gateway.addr, "").await {
                Ok(ServingStatus::Serving) => return,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                Err(e) => panic!("the health service refused: {e}"),
            }
        }
    })
    .await;
    assert!(serving.is_ok(), "not SERVING within {DEADLINE:?}");
    assert_eq!(
        health_status(&gateway.addr, FLIGHT).await.unwrap(),
        ServingStatus::Serving
    );
    let unknown = health_status(&gateway.addr, "no.such.Service")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let (code, text) = healthcheck(&gateway.addr).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("SERVING"), "{text}");
    let _ = std::fs::remove_file(users);
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_fails_when_nothing_listens() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let (code, text) = healthcheck(&addr).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
}
