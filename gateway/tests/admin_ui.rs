//! The Socket.IO Admin UI's namespace, in process: what a UI gets when it
//! logs in, and that the socket list it gets at once fits its outbound
//! queue (a list larger than the queue's bound would cut the UI off as a
//! slow consumer). The whole UI, against two processes and in Chromium, is
//! tested in `tests/js/test/admin_ui.test.js`.

mod support;

use serde_json::{Value, json};
use support::node::start_plain;
use support::sio::{AckMode, SioClient};

const PASSWORD: &str = "pw-for-the-tests";

/// Events of `ui` until `name` (included), by name.
async fn until(ui: &mut SioClient, name: &str) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    loop {
        let (event, args, _) = ui.event().await;
        let done = event == name;
        out.push((event, args));
        if done {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ui_gets_the_sockets_that_fit_its_queue_and_stays_connected() {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let node = start_plain(&format!(
        r#"
        [server]
        max_payload = 4000
        [limits]
        outbound_queue_bytes = 8000
        [admin_ui]
        enabled = true
        username = "admin"
        password_hash = "{hash}"
        stats_interval_ms = 200
        "#
    ))
    .await;
    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(SioClient::connect(node.addr, "/", AckMode::Echo).await);
    }
    let auth = json!({ "username": "admin", "password": PASSWORD });
    let mut ui = SioClient::connect_with(node.addr, "/admin", AckMode::Echo, Some(auth)).await;
    let events = until(&mut ui, "all_sockets").await;
    let named = |name: &str| {
        events
            .iter()
            .find(|(e, _)| e == name)
            .map(|(_, args)| args.clone())
            .unwrap_or_else(|| panic!("no {name} in {events:?}"))
    };
    assert!(named("session")[0].as_str().is_some_and(|s| s.len() > 20));
    let features = named("config")[0]["supportedFeatures"].clone();
    assert!(features.as_array().unwrap().contains(&json!("DISCONNECT")));
    let list = named("all_sockets")[0].clone();
    let listed = list.as_array().unwrap();
    // Cut to fit half the outbound bound: some sockets, not all 31.
    assert!(!listed.is_empty() && listed.len() < 31, "{}", listed.len());
    assert!(list.to_string().len() <= 4000);
    let first = &listed[0];
    assert!(first["id"].is_string() && first["handshake"]["headers"].is_object());
    assert_eq!(first["transport"], "websocket");
    // Still connected: the statistics keep coming.
    for _ in 0..2 {
        let stats = until(&mut ui, "server_stats").await.pop().unwrap().1;
        assert_eq!(stats[0]["serverId"], node.node_id());
        assert_eq!(stats[0]["clientsCount"], 31);
    }
}
