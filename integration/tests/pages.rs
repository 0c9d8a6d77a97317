//! The embedded pages and `/api/status` on the real binary: `/` is the dashboard, `/mqws.js`
//! is the client module (served as JavaScript, so browsers import it), and `/api/status`
//! reports the log's epoch and seqs, connections and rates, with the same token rule as `/ws`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mqws_integration::*;
use rumqttc::QoS;
use serde_json::Value;
use sha2::Digest;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_client_are_served_from_the_binary() {
    let server = Server::start();
    let page = http_get(server.http_addr, "/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.body.contains("dashboard.js"), "{}", page.body);
    for (path, kind, needle) in [
        ("/mqws.js", "text/javascript", "export function connect"),
        ("/dashboard.js", "text/javascript", "/mqws.js"),
        (
            "/dashboard-model.js",
            "text/javascript",
            "export class Topics",
        ),
        ("/dashboard.css", "text/css", "{"),
    ] {
        let r = http_get(server.http_addr, path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}: {:?}",
            r.header("content-type")
        );
        assert!(r.body.contains(needle), "{path} lacks {needle}");
    }
    let missing = http_get(server.http_addr, "/test/mqws.test.mjs").await;
    assert_eq!(missing.status, 404, "the client's tests are not served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_dir_is_served_under_app() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("pages");
    std::fs::create_dir(&pages).unwrap();
    std::fs::write(pages.join("index.html"), "<title>mine</title>").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "not served").unwrap();
    let config = format!("[http]\nstatic_dir = {:?}\n", pages.display().to_string());
    let server = Server::start_configured(&config, &[], None);
    let r = http_get(server.http_addr, "/app/index.html").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(r.body, "<title>mine</title>");
    let out = http_get(server.http_addr, "/app/../secret.txt").await;
    assert_ne!(out.status, 200, "nothing outside static_dir: {out:?}");
    let out = http_get(server.http_addr, "/app/%2e%2e/secret.txt").await;
    assert_ne!(out.status, 200, "nothing outside static_dir: {out:?}");
    // The dashboard is still at `/`.
    assert_eq!(http_get(server.http_addr, "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_log_connections_and_rates() {
    let server = Server::start();
    let before: Value =
        serde_json::from_str(&http_get(server.http_addr, "/api/status").await.body).unwrap();
    let mut ws = ws_connect(&server).await;
    let welcome = hello(&mut ws, &["status/#"]).await;
    let mut publisher = mqtt_client(&server, "status-pub").await;
    for i in 0..5 {
        publisher
            .publish("status/t", QoS::AtLeastOnce, false, format!("m{i}"))
            .await;
    }
    publisher.wait_pubacks(5, WAIT).await;
    collect_messages(&mut ws, 5, WAIT).await;
    // Rates are measured over at least a second between polls.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = http_get(server.http_addr, "/api/status").await;
    assert_eq!(r.status, 200, "{r:?}");
    let s: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(s["epoch"], welcome["position"]["epoch"], "{s}");
    assert_eq!(
        s["head_seq"].as_u64().unwrap(),
        before["head_seq"].as_u64().unwrap() + 5,
        "{s}"
    );
    assert!(s["first_seq"].as_u64().is_some(), "{s}");
    assert!(s["log_bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["connections"]["websocket"], 1, "{s}");
    assert_eq!(s["connections"]["mqtt"], 1, "{s}");
    assert!(s["rates"]["logged_per_s"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["rates"]["delivered_per_s"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["server"].as_str().unwrap().starts_with("mqws/"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_needs_a_token_when_auth_is_on() {
    let hash = hex::encode(sha2::Sha256::digest(b"status-token"));
    let config = format!(
        "[auth]\nmode = \"tokens\"\n[[auth.tokens]]\nsha256 = \"{hash}\"\nsub = [\"a/#\"]\npub = []\n"
    );
    let server = Server::start_configured(&config, &[], None);
    let none = http_get(server.http_addr, "/api/status").await;
    assert_eq!(none.status, 401, "{none:?}");
    let e: Value = serde_json::from_str(&none.body).unwrap();
    assert_eq!(e["code"], "unauthorized", "{e}");
    let wrong = http_get_with(
        server.http_addr,
        "/api/status",
        &[("Authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let ok = http_get_with(
        server.http_addr,
        "/api/status",
        &[("Authorization", "Bearer status-token")],
    )
    .await;
    assert_eq!(ok.status, 200, "{ok:?}");
}
