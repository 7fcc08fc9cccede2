//! The HTTP surface against a real server on 127.0.0.1.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use stackd::crd::{InventoryEntry, ServiceStatus, StackPhase};
use stackd::http::{AppState, Readiness, SourceControl, router, serve};
use stackd::metrics::Metrics;
use stackd::state::{PlanSummary, RepositoryView, SharedState, StackView};

/// Records triggers; accepts webhooks whose `X-Test-Signature` is `good`.
#[derive(Default)]
struct RecordingSource {
    triggered: Mutex<Vec<String>>,
}

impl SourceControl for RecordingSource {
    fn trigger(&self, repository: &str) -> bool {
        if repository == "apps" {
            self.triggered.lock().unwrap().push(repository.to_string());
            true
        } else {
            false
        }
    }

    fn webhook(
        &self,
        _provider: &str,
        headers: &HeaderMap,
        _body: &[u8],
    ) -> (StatusCode, &'static str) {
        match headers.get("x-test-signature").map(|v| v.as_bytes()) {
            Some(b"good") => (StatusCode::ACCEPTED, "accepted"),
            Some(_) => (StatusCode::UNAUTHORIZED, "bad_signature"),
            None => (StatusCode::UNAUTHORIZED, "missing_signature"),
        }
    }
}

struct Server {
    base: String,
    state: SharedState,
    metrics: Metrics,
    source: Arc<RecordingSource>,
    readiness: Readiness,
    client: reqwest::Client,
}

async fn start(token: Option<&str>) -> Server {
    let state = SharedState::new();
    let metrics = Metrics::new();
    let source = Arc::new(RecordingSource::default());
    let mut app = AppState::new(state.clone(), metrics.clone());
    app.api_token = token.map(Arc::from);
    app.source = Some(source.clone());
    app.body_limit = 64 * 1024;
    app.readiness.set_ready();
    let readiness = app.readiness.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, router(app, true), std::future::pending()));
    seed(&state, &metrics);
    Server {
        base,
        state,
        metrics,
        source,
        readiness,
        client: reqwest::Client::new(),
    }
}

fn seed(state: &SharedState, metrics: &Metrics) {
    state.put_repository(RepositoryView {
        name: "apps".into(),
        url: "https://git.example.com/team/apps.git".into(),
        git_ref: "main".into(),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        subject: Some("Bump nginx".into()),
        last_result: Some("fetched".into()),
        ..RepositoryView::default()
    });
    state.put_stack(StackView {
        namespace: "shop".into(),
        name: "shop".into(),
        path: Some("shop".into()),
        revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
        phase: StackPhase::Progressing,
        services_ready: 1,
        services_total: 2,
        services: vec![ServiceStatus {
            name: "app".into(),
            kind: "Deployment".into(),
            desired: 3,
            ready: 1,
            updated: 3,
        }],
        objects: vec![InventoryEntry {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "app".into(),
            hash: None,
        }],
        last_plan: Some(PlanSummary {
            created: vec!["Deployment/app".into()],
            ..PlanSummary::default()
        }),
        ..StackView::default()
    });
    state.put_stack(StackView {
        namespace: "evil".into(),
        name: "<script>alert(1)</script>".into(),
        phase: StackPhase::Failure,
        last_error: Some("services.web.ports[0]: port 70000 is out of range".into()),
        ..StackView::default()
    });
    metrics.set_stack(
        "shop",
        "shop",
        StackPhase::Progressing,
        stackd::reason::Reason::Progressing,
        1,
        2,
    );
    metrics
        .reconcile_total
        .with_label_values(&["shop", "shop", "success"])
        .inc();
    metrics
        .objects_applied_total
        .with_label_values(&["Deployment"])
        .inc();
}

impl Server {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }
}

fn content_type(response: &reqwest::Response) -> String {
    response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn routes_answer_with_their_status_and_content_type() {
    let server = start(Some("s3cret")).await;
    for (path, status, kind) in [
        ("/", 200, "text/html"),
        ("/stacks/shop/shop", 200, "text/html"),
        ("/stacks/shop/missing", 404, "text/html"),
        ("/api/v1/repositories", 200, "application/json"),
        ("/api/v1/stacks", 200, "application/json"),
        ("/api/v1/stacks/shop/shop", 200, "application/json"),
        ("/api/v1/stacks/shop/missing", 404, "application/json"),
        ("/metrics", 200, "text/plain"),
        ("/healthz", 200, "text/plain"),
        ("/readyz", 200, "text/plain"),
        ("/nope", 404, "application/json"),
    ] {
        let response = server.get(path).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert!(
            content_type(&response).starts_with(kind),
            "{path}: {}",
            content_type(&response)
        );
    }
}

#[tokio::test]
async fn readyz_names_each_missing_condition_until_none_is() {
    let server = start(None).await;
    server.readiness.set_missing(vec![
        "repositories not polled yet: apps".into(),
        "the Stack controller's caches have not had their initial list: Deployment".into(),
    ]);
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.text().await.unwrap(),
        "not ready:\n- repositories not polled yet: apps\n- the Stack controller's caches have not had their initial list: Deployment\n"
    );
    server.readiness.set_ready();
    let response = server.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ready\n");
    // Before the daemon says anything, it is not ready.
    assert!(!Readiness::default().is_ready());
}

#[tokio::test]
async fn page_shows_stacks_and_escapes_hostile_names() {
    let server = start(None).await;
    let html = server.get("/").await.text().await.unwrap();
    assert!(html.contains(">shop/shop</a>"), "{html}");
    assert!(html.contains("<td data-label=\"Ready\">1/2</td>"), "{html}");
    assert!(html.contains("git.example.com/team/apps.git"));
    assert!(html.contains("Bump nginx"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>"), "unescaped script tag");
    assert!(html.contains("port 70000 is out of range"));
    let detail = server.get("/stacks/shop/shop").await.text().await.unwrap();
    assert!(
        detail.contains("<td>app</td><td>Deployment</td><td>3</td><td>1</td><td>3</td>"),
        "{detail}"
    );
    assert!(detail.contains("<code>Deployment/app</code>"));
}

#[tokio::test]
async fn the_overview_filters_from_the_query_string() {
    let server = start(None).await;
    let html = server
        .get("/?phase=Failure&repo=&q=")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains(">shop/shop</a>"), "{html}");
    assert!(
        html.contains("aria-current=\"page\">Failure 1</a>"),
        "{html}"
    );
    let html = server.get("/?q=SHO&page=x").await.text().await.unwrap();
    assert!(html.contains(">shop/shop</a>"), "{html}");
    assert!(!html.contains("alert(1)"), "{html}");
    assert!(html.contains("page 1 of 1 · stacks 1–1 of 1"), "{html}");
}

#[tokio::test]
async fn the_page_and_the_api_are_gzipped_when_the_client_accepts_it() {
    use std::io::Read;
    let server = start(None).await;
    for path in ["/", "/api/v1/stacks"] {
        let plain = server.get(path).await;
        assert!(plain.headers().get("content-encoding").is_none(), "{path}");
        let plain = plain.bytes().await.unwrap();
        let gzipped = server
            .client
            .get(format!("{}{path}", server.base))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(gzipped.headers()["content-encoding"], "gzip", "{path}");
        let body = gzipped.bytes().await.unwrap();
        assert!(body.len() < plain.len(), "{path}");
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut text)
            .unwrap();
        // The page shows the time it was made; the JSON is the same bytes.
        if path != "/" {
            assert_eq!(text, plain, "{path}");
        } else {
            assert!(String::from_utf8(text).unwrap().contains(">shop/shop</a>"));
        }
    }
}

#[tokio::test]
async fn json_api_matches_shared_state() {
    let server = start(None).await;
    let stacks: serde_json::Value = server.get("/api/v1/stacks").await.json().await.unwrap();
    let expected = serde_json::to_value(server.state.stacks()).unwrap();
    assert_eq!(stacks["stacks"], expected);
    let one: serde_json::Value = server
        .get("/api/v1/stacks/shop/shop")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["phase"], "Progressing");
    assert_eq!(one["servicesReady"], 1);
    let repositories: serde_json::Value = server
        .get("/api/v1/repositories")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(repositories["repositories"][0]["ref"], "main");
    assert_eq!(
        repositories["repositories"][0]["commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
}

#[tokio::test]
async fn sync_requires_the_bearer_token() {
    let server = start(Some("s3cret")).await;
    let url = format!("{}/api/v1/repositories/apps/sync", server.base);
    let missing = server.client.post(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let wrong = server
        .client
        .post(&url)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(server.source.triggered.lock().unwrap().is_empty());
    let right = server
        .client
        .post(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 202);
    assert_eq!(
        *server.source.triggered.lock().unwrap(),
        vec!["apps".to_string()]
    );
    let unknown = server
        .client
        .post(format!("{}/api/v1/repositories/other/sync", server.base))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn sync_is_off_without_a_token() {
    let server = start(None).await;
    let response = server
        .client
        .post(format!("{}/api/v1/repositories/apps/sync", server.base))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(server.source.triggered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn webhooks_are_counted_and_oversized_bodies_refused() {
    let server = start(None).await;
    let url = format!("{}/hooks/github", server.base);
    let good = server
        .client
        .post(&url)
        .header("x-test-signature", "good")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 202);
    let bad = server
        .client
        .post(&url)
        .header("x-test-signature", "bad")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let missing = server.client.post(&url).body("{}").send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let huge = server
        .client
        .post(&url)
        .header("x-test-signature", "good")
        .body(vec![b'x'; 65 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let text = server.metrics.render();
    assert!(
        text.contains(r#"stackd_webhook_requests_total{provider="github",result="accepted"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"stackd_webhook_requests_total{provider="github",result="bad_signature"} 1"#
        )
    );
    assert!(text.contains(
        r#"stackd_webhook_requests_total{provider="github",result="missing_signature"} 1"#
    ));
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let server = start(None).await;
    let text = server.get("/metrics").await.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for expected in [
        "stackd_stack_info",
        "stackd_stack_services_ready",
        "stackd_stack_services_desired",
        "stackd_reconcile_total",
        "stackd_objects_applied_total",
        "stackd_build_info",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    let info = scrape
        .samples
        .iter()
        .find(|s| s.metric == "stackd_stack_info")
        .unwrap();
    assert_eq!(info.labels.get("phase"), Some("Progressing"));
    assert!(names.iter().all(|n| n.starts_with("stackd_")), "{names:?}");
}
