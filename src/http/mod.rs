//! The HTTP surface: status page, JSON API, `/metrics`, health, webhooks, and the
//! manual sync trigger. Handlers only read [`SharedState`] and hand requests to a
//! [`SourceControl`]; they never call the Kubernetes API or git themselves.

pub mod page;
pub mod picture;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use subtle::ConstantTimeEq;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::metrics::Metrics;
use crate::state::SharedState;

/// Largest request body accepted (webhook payloads are well under this).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Time limit for any request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the HTTP layer may ask of the Git source.
pub trait SourceControl: Send + Sync {
    /// Triggers a poll of `repository` now; false when there is no such repository.
    fn trigger(&self, repository: &str) -> bool;
    /// Verifies a webhook and triggers the matching polls. Returns the status to
    /// answer with and a short result label for metrics (`accepted`, `unauthorized`, ...).
    fn webhook(
        &self,
        provider: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (StatusCode, &'static str);
}

/// Readiness: what the daemon still waits for before it should get traffic
/// (repositories polled, the controller's caches listed), in words; ready when
/// nothing is missing. Not ready until the daemon first says otherwise.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<RwLock<Vec<String>>>);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(Arc::new(RwLock::new(vec!["starting".to_string()])))
    }
}

impl Readiness {
    pub fn set_missing(&self, missing: Vec<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = missing;
    }

    pub fn set_ready(&self) {
        self.set_missing(Vec::new());
    }

    pub fn missing(&self) -> Vec<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_ready(&self) -> bool {
        self.missing().is_empty()
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub state: SharedState,
    pub metrics: Metrics,
    pub readiness: Readiness,
    /// The bearer token for `POST /api/v1/repositories/{name}/sync`; `None` turns it off.
    pub api_token: Option<Arc<str>>,
    pub source: Option<Arc<dyn SourceControl>>,
    pub body_limit: usize,
    pub request_timeout: Duration,
}

impl AppState {
    pub fn new(state: SharedState, metrics: Metrics) -> Self {
        AppState {
            state,
            metrics,
            readiness: Readiness::default(),
            api_token: None,
            source: None,
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// All routes. `metrics_on_main` also serves `/metrics` here (off when a separate
/// metrics listener is used).
pub fn router(app: AppState, metrics_on_main: bool) -> Router {
    let limit = app.body_limit;
    let timeout = app.request_timeout;
    let mut router = Router::new()
        .route("/", get(overview))
        .route("/stacks/{namespace}/{name}", get(stack_page))
        .route("/api/v1/repositories", get(api_repositories))
        .route("/api/v1/stacks", get(api_stacks))
        .route("/api/v1/stacks/{namespace}/{name}", get(api_stack))
        .route("/api/v1/repositories/{name}/sync", post(api_sync))
        .route("/hooks/{provider}", post(webhook))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if metrics_on_main {
        router = router.route("/metrics", get(metrics));
    }
    router
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(TraceLayer::new_for_http())
        // gzip when the client accepts it: the 1,000-stack JSON shrinks about tenfold.
        // The fastest level: the default one cost 13 ms on 2.3 MB, for little gain.
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .quality(tower_http::CompressionLevel::Fastest),
        )
        .with_state(app)
}

/// Only `/metrics` (and health), for a separate metrics port.
pub fn metrics_router(app: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            app.request_timeout,
        ))
        .with_state(app)
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// `?refresh=off` stops the page reloading itself; the overview also reads its
/// view from `?phase=Failure&repo=apps&q=shop&page=2`.
#[derive(serde::Deserialize)]
struct PageQuery {
    refresh: Option<String>,
    phase: Option<String>,
    repo: Option<String>,
    q: Option<String>,
    page: Option<String>,
}

impl PageQuery {
    fn refresh(&self) -> page::Refresh {
        match self.refresh.as_deref() {
            Some("off" | "0" | "false" | "no") => page::Refresh::Off,
            _ => page::Refresh::Auto,
        }
    }

    /// Empty values (an untouched form field) mean "any"; a bad page number the first.
    fn filter(&self) -> page::Filter {
        let given = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        page::Filter {
            phase: given(&self.phase).and_then(|p| page::parse_phase(&p)),
            repo: given(&self.repo),
            q: given(&self.q),
            page: given(&self.page).and_then(|p| p.parse().ok()).unwrap_or(1),
        }
    }
}

async fn overview(State(app): State<AppState>, Query(query): Query<PageQuery>) -> Html<String> {
    Html(page::overview(
        &app.state.repositories(),
        &app.state.stacks(),
        chrono::Utc::now(),
        query.refresh(),
        app.state.config_error().as_deref(),
        &query.filter(),
    ))
}

async fn stack_page(
    State(app): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Response {
    match app.state.stack(&namespace, &name) {
        Some(stack) => {
            Html(page::stack_detail(&stack, query.refresh(), chrono::Utc::now())).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><html lang=\"en\"><title>not found</title><p>No stack {}/{}. <a href=\"/\">All stacks</a></p></html>",
                page::escape(&namespace),
                page::escape(&name)
            )),
        )
            .into_response(),
    }
}

async fn api_repositories(State(app): State<AppState>) -> Response {
    axum::Json(json!({
        "repositories": app.state.repositories(),
        "configError": app.state.config_error(),
    }))
    .into_response()
}

async fn api_stacks(State(app): State<AppState>) -> Response {
    // Serialized straight from the views: `json!` built a `Value` tree of every
    // stack first (2.3 MB of JSON at 1,000 stacks), which cost as much again.
    #[derive(serde::Serialize)]
    struct Stacks {
        stacks: Vec<crate::state::StackView>,
    }
    axum::Json(Stacks {
        stacks: app.state.stacks(),
    })
    .into_response()
}

async fn api_stack(
    State(app): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match app.state.stack(&namespace, &name) {
        Some(stack) => axum::Json(stack).into_response(),
        None => json_error(
            StatusCode::NOT_FOUND,
            &format!("no stack {namespace}/{name}"),
        ),
    }
}

async fn api_sync(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = &app.api_token else {
        return json_error(
            StatusCode::NOT_FOUND,
            "the sync endpoint is off: start stackd with --api-token-file to enable it",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        let mut response = json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header"),
        );
        return response;
    }
    match &app.source {
        Some(source) if source.trigger(&name) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "repository": name, "sync": "triggered" })),
        )
            .into_response(),
        _ => json_error(StatusCode::NOT_FOUND, &format!("no repository {name:?}")),
    }
}

async fn webhook(
    State(app): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, result) = match &app.source {
        Some(source) => source.webhook(&provider, &headers, &body),
        None => (StatusCode::NOT_FOUND, "no_source"),
    };
    let provider_label = match provider.as_str() {
        "github" | "gitlab" | "gitea" | "forgejo" | "generic" => provider.as_str(),
        _ => "unknown",
    };
    app.metrics
        .webhook_requests_total
        .with_label_values(&[provider_label, result])
        .inc();
    (status, axum::Json(json!({ "result": result }))).into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        axum::body::Body::from_stream(futures::stream::iter(
            app.metrics
                .exposition()
                .map(|text| Ok::<_, std::convert::Infallible>(Bytes::from(text))),
        )),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 `ready`, or 503 naming each missing condition on its own line.
async fn readyz(State(app): State<AppState>) -> Response {
    let missing = app.readiness.missing();
    if missing.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let mut body = String::from("not ready:\n");
    for reason in missing {
        body.push_str("- ");
        body.push_str(&reason);
        body.push('\n');
    }
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "no such route")
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

impl SourceControl for crate::git::source::SourceHandle {
    fn trigger(&self, repository: &str) -> bool {
        crate::git::source::SourceHandle::trigger(self, repository)
    }

    fn webhook(
        &self,
        provider: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (StatusCode, &'static str) {
        use crate::git::webhook::{Provider, handle};
        let Some(provider) = Provider::from_name(provider) else {
            return (StatusCode::NOT_FOUND, "unknown_provider");
        };
        let outcome = handle(provider, headers, body, self);
        let result = match outcome.status {
            StatusCode::ACCEPTED => "accepted",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::NOT_FOUND => "no_matching_repository",
            StatusCode::BAD_REQUEST => "bad_payload",
            _ => "error",
        };
        (outcome.status, result)
    }
}
