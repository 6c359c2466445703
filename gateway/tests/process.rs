//! The `gateway` binary as an operator runs it: settings from the
//! environment (lists given comma-separated), admin tokens that must be real
//! secrets and a token file read again on SIGHUP, log lines (JSON on stdout,
//! text on stderr without colour when not a terminal, the node id on every
//! line, one start-up summary), and a Redis outage logged once per interval
//! in plain words.

mod support;

use std::time::Duration;

use support::process::{Running, gateway};
use support::tempdir::TempDir;
use support::wait::{DEADLINE, poll_for};

/// A node id of the test's choosing (six characters of the id alphabet).
const NODE_ID: &str = "procA1";

/// Every listener on a port of its own on loopback, and the node id.
const LOOPBACK: [(&str, &str); 3] = [
    ("GATEWAY_SERVER__LISTEN", "127.0.0.1:0"),
    ("GATEWAY_ADMIN__LISTEN", "127.0.0.1:0"),
    ("GATEWAY_CLUSTER__NODE_ID", NODE_ID),
];

/// `gateway --check-config` with `env`: its exit code and stderr.
fn check_config(env: &[(&str, &str)]) -> (i32, String) {
    let out = gateway(&["--check-config"], env).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lists_in_the_environment_are_json_or_comma_separated() {
    let comma = (
        "GATEWAY_SERVER__CORS_ORIGINS",
        "https://a.example,https://b.example",
    );
    let json = (
        "GATEWAY_SERVER__CORS_ORIGINS",
        r#"["https://a.example","https://b.example"]"#,
    );
    for env in [
        comma,
        json,
        ("GATEWAY_SERVER__TRANSPORTS", "websocket, polling"),
    ] {
        let (code, stderr) = check_config(&[env]);
        assert_eq!(code, 0, "{env:?}: {stderr}");
    }
    let (code, stderr) = check_config(&[("GATEWAY_SERVER__TRANSPORTS", "polling,pigeon")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("pigeon"), "{stderr}");
}

#[tokio::test]
async fn comma_separated_origins_are_each_allowed() {
    let mut env = LOOPBACK.to_vec();
    env.push((
        "GATEWAY_SERVER__CORS_ORIGINS",
        "https://a.example, https://b.example",
    ));
    let node = Running::start(&[], &env);
    let addr = poll_for("the client address", DEADLINE, || async {
        node.stdout()
            .iter()
            .find_map(|l| l.strip_prefix("gateway listening on ").map(str::to_owned))
    })
    .await;
    let client = reqwest::Client::new();
    let allowed = |origin: &'static str| {
        let request = client
            .get(format!("http://{addr}/socket.io/?EIO=4&transport=polling"))
            .header("origin", origin);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response
                .headers()
                .get("access-control-allow-origin")
                .map(|v| v.to_str().unwrap().to_owned())
        }
    };
    assert_eq!(
        allowed("https://b.example").await.as_deref(),
        Some("https://b.example")
    );
    assert_eq!(
        allowed("https://a.example").await.as_deref(),
        Some("https://a.example")
    );
    assert_eq!(allowed("https://c.example").await, None);
}

#[test]
fn a_placeholder_or_short_admin_token_stops_the_start() {
    for token in ["replace-me-in-the-overlay", "short"] {
        let (code, stderr) = check_config(&[("GATEWAY_ADMIN__TOKEN", token)]);
        assert_eq!(code, 2, "{token}: {stderr}");
        assert!(stderr.contains("admin.token"), "{stderr}");
        let mut env = LOOPBACK.to_vec();
        env.push(("GATEWAY_ADMIN__TOKEN", token));
        let out = gateway(&[], &env).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{token}");
    }
    let (code, stderr) = check_config(&[("GATEWAY_ADMIN__TOKEN", "0123456789abcdef0123")]);
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn json_logs_on_stdout_carry_the_node_id_and_sighup_reloads_the_tokens() {
    let dir = TempDir::new("process-tokens");
    let file = dir.path().join("tokens");
    let (old, new) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    std::fs::write(&file, format!("{old}\n")).unwrap();
    let mut env = LOOPBACK.to_vec();
    let file_text = file.to_str().unwrap().to_owned();
    env.push(("GATEWAY_ADMIN__TOKEN_FILE", &file_text));
    let node = Running::start(&["--log-format", "json"], &env);

    let started = node.json_line("gateway started", DEADLINE).await;
    assert_eq!(started["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(started["node_id"], NODE_ID);
    assert_eq!(started["bus"], "in-process");
    assert_eq!(started["namespaces"], "/");
    assert_eq!(started["ops"], "none");
    let admin_addr = started["admin"].as_str().unwrap().to_owned();
    assert!(
        started["client"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    // The rotation, announced by SIGHUP (the file is polled only every 10 s).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{admin_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = gateway_proto::admin::v1::admin_client::AdminClient::new(channel);
    let with_new = || {
        let mut request = tonic::Request::new(gateway_proto::admin::v1::ClusterInfoRequest {});
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {new}").parse().unwrap());
        request
    };
    let refused = admin.cluster_info(with_new()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    // Signalled only once the handler is installed (before, SIGHUP would
    // end the process).
    node.json_line(
        "admin tokens: the file is read again when it changes and on SIGHUP",
        DEADLINE,
    )
    .await;
    std::fs::write(&file, format!("{new}\n{old}\n")).unwrap();
    node.signal("HUP");
    let reloaded = node
        .json_line("admin tokens reloaded", Duration::from_secs(5))
        .await;
    assert_eq!(reloaded["on"], "SIGHUP");
    admin
        .cluster_info(with_new())
        .await
        .expect("the new token after SIGHUP");

    // Every line on stdout is JSON with the node id; nothing else is
    // written there, and no log line goes to stderr.
    let lines = node.json_lines();
    assert!(lines.len() >= 3, "{lines:?}");
    for line in &lines {
        assert_eq!(line["node_id"], NODE_ID, "{line}");
        assert!(line["timestamp"].is_string() && line["level"].is_string());
    }
    assert_eq!(node.stderr(), Vec::<String>::new());
}

#[tokio::test]
async fn text_logs_have_the_node_id_and_no_colour_off_a_terminal() {
    let node = Running::start(&[], &LOOPBACK);
    let summary = poll_for("the start-up summary", DEADLINE, || async {
        node.stderr()
            .into_iter()
            .find(|l| l.contains("gateway started"))
    })
    .await;
    assert!(summary.contains(&format!("node={NODE_ID}")), "{summary}");
    assert!(summary.contains("bus=in-process"), "{summary}");
    for line in node.stderr() {
        assert!(line.contains(&format!("node={NODE_ID}")), "{line}");
        assert!(!line.contains('\x1b'), "colour codes: {line:?}");
    }
    assert!(
        node.stdout()[0].starts_with("gateway listening on 127.0.0.1:"),
        "{:?}",
        node.stdout()
    );
}

#[tokio::test]
async fn a_redis_outage_is_one_plain_warning_per_interval() {
    // Nothing listens there: every connection attempt is refused.
    let url = format!("redis://127.0.0.1:{}", support::redis::free_server_port());
    let mut env = LOOPBACK.to_vec();
    env.push(("GATEWAY_CLUSTER__REDIS_URL", &url));
    let node = Running::start(&["--log-format", "json"], &env);
    let started = node
        .json_line("gateway started", Duration::from_secs(15))
        .await;
    assert_eq!(started["bus"], url);
    let lost = node
        .json_line("redis subscriber connection lost; retrying", DEADLINE)
        .await;
    let error = lost["error"].as_str().unwrap();
    assert!(error.contains("Connection refused"), "{error}");
    assert!(!error.contains("Os {"), "Rust debug form: {error}");
    // The client retries every 2 s at most: over 6 s, several failures and
    // still one line.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let lines = node.json_lines();
    let warnings = lines
        .iter()
        .filter(|l| l["message"] == "redis subscriber connection lost; retrying")
        .count();
    assert_eq!(warnings, 1, "{lines:#?}");
    let from_client: Vec<_> = lines
        .iter()
        .filter(|l| l["target"].as_str().unwrap_or("").starts_with("fred"))
        .collect();
    assert!(from_client.is_empty(), "{from_client:#?}");
    for line in &lines {
        assert_eq!(line["node_id"], NODE_ID, "{line}");
        assert!(!line.to_string().contains(".cargo/registry"), "{line}");
    }
    // 30 s after the first, the next line counts those held back.
    let next = poll_for(
        "the second outage warning",
        Duration::from_secs(40),
        || async {
            node.json_lines()
                .into_iter()
                .filter(|l| l["message"] == "redis subscriber connection lost; retrying")
                .nth(1)
        },
    )
    .await;
    assert!(next["held_back"].as_u64().unwrap() >= 3, "{next}");
}
