//! The HTTP face: routing Kubernetes API paths, query parameters and content
//! types onto the store, fault injection, the request log and watch streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::error::ApiError;
use super::faults::{Access, FaultAction, FaultRule, LoggedRequest, take_fault};
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::store::{DeleteOptions, Filter, PatchBody, Propagation, Scope, Store, WriteOptions};

#[derive(Default)]
pub struct Shared {
    pub store: Store,
    pub faults: Mutex<Vec<FaultRule>>,
    pub log: Mutex<Vec<LoggedRequest>>,
    pub settings: super::Settings,
    /// Requests being served now, watches excluded (as `--max-requests-inflight`).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Impersonated users whose writes are refused, like a user without RBAC.
    pub forbidden_users: Mutex<Vec<String>>,
    /// Kinds whose live watch events are held back (not lost) until released,
    /// like a watch that lags behind the writes.
    pub held_watch_kinds: Mutex<Vec<String>>,
}

/// A slot among the requests in flight, given back when dropped.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Takes a slot, or `None` when `limit` requests are already in flight.
fn take_slot(shared: &Shared, limit: usize) -> Option<InFlight<'_>> {
    let counter = &shared.in_flight;
    let before = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let slot = InFlight(counter);
    (before < limit).then_some(slot)
}

pub fn router(shared: Arc<Shared>) -> axum::Router {
    // The fake's own limit answers with a `Status`, as the real server does;
    // axum's smaller default would answer 413 in plain text first.
    axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(4 * MAX_OBJECT_BYTES))
        .with_state(shared)
}

/// A parsed request path.
enum Route {
    Version,
    CoreVersions,
    Groups,
    Resources {
        group: String,
        version: String,
    },
    Collection {
        rt: &'static ResourceType,
        namespace: Option<String>,
    },
    Object {
        rt: &'static ResourceType,
        namespace: String,
        name: String,
        scope: Scope,
    },
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["api", version] => {
            return Ok(Route::Resources {
                group: String::new(),
                version: version.to_string(),
            });
        }
        ["apis", group, version] => {
            return Ok(Route::Resources {
                group: group.to_string(),
                version: version.to_string(),
            });
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, rest) = rest.split_first().ok_or_else(ApiError::no_route)?;
    let rt = resources::find(group, version, plural).ok_or_else(ApiError::no_route)?;
    if namespace.is_some() && !rt.namespaced {
        return Err(ApiError::no_route());
    }
    match rest {
        [] => Ok(Route::Collection { rt, namespace }),
        [name, tail @ ..] => {
            let scope = match tail {
                [] => Scope::Main,
                ["status"] if rt.has_status => Scope::Status,
                _ => return Err(ApiError::no_route()),
            };
            let namespace = match (rt.namespaced, namespace) {
                (true, Some(ns)) => ns,
                (false, None) => String::new(),
                _ => return Err(ApiError::no_route()),
            };
            Ok(Route::Object {
                rt,
                namespace,
                name: name.to_string(),
                scope,
            })
        }
    }
}

/// etcd's default request limit (`--max-request-bytes`, 1.5 MiB): a larger
/// object is refused, whatever its kind.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let impersonate_user = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let path = uri.path().to_string();
    let watch = is_true(query.get("watch"));
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All") || body_dry_run(&method, &body);
    // Like kube-apiserver: long-running requests (watches) do not count.
    let slot = match shared.settings.max_in_flight {
        Some(limit) if !watch => Some(take_slot(&shared, limit)),
        _ => None,
    };
    let fault = match slot {
        Some(None) => Some(FaultAction::TooManyRequests {
            retry_after: Duration::from_secs(1),
        }),
        _ => {
            if !shared.settings.latency.is_zero() {
                tokio::time::sleep(shared.settings.latency).await;
            }
            let mut rules = shared.faults.lock().unwrap_or_else(|p| p.into_inner());
            take_fault(&mut rules, &method, &path, &user_agent)
        }
    };
    let too_large = method != Method::GET && body.len() > MAX_OBJECT_BYTES;
    let forbidden = method != Method::GET
        && impersonate_user.as_ref().is_some_and(|user| {
            let users = shared
                .forbidden_users
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            users.contains(user)
        });
    let response = match fault {
        _ if too_large => ApiError::too_large().into_response(),
        _ if forbidden => {
            let user = impersonate_user.clone().unwrap_or_default();
            ApiError::forbidden(&user, method.as_str(), &path).into_response()
        }
        Some(FaultAction::Fail(code)) => {
            let mut error = ApiError::internal("injected fault");
            error.code = code;
            error.into_response()
        }
        Some(FaultAction::TooManyRequests { retry_after }) => {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let mut response = ApiError::too_many_requests().into_response();
            if let Ok(value) = seconds.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Some(FaultAction::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            serve(&shared, &method, &path, &query, &headers, &body).await
        }
        None => serve(&shared, &method, &path, &query, &headers, &body).await,
    };
    let access = if method == Method::GET {
        Access::Read
    } else {
        Access::Write
    };
    shared
        .log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(LoggedRequest {
            method,
            path,
            query: uri.query().unwrap_or_default().to_string(),
            access,
            watch,
            dry_run,
            status: response.status().as_u16(),
            impersonate_user,
            user_agent,
        });
    response
}

fn is_true(value: Option<&String>) -> bool {
    value.is_some_and(|v| v == "true" || v == "1")
}

/// kube sends delete options (including `dryRun`) in the DELETE body.
fn body_dry_run(method: &Method, body: &Bytes) -> bool {
    *method == Method::DELETE
        && serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("dryRun").cloned())
            .is_some_and(|v| v == json!(["All"]))
}

async fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    match serve_inner(shared, method, path, query, headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve_inner(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let store = &shared.store;
    let options = WriteOptions {
        field_manager: query.get("fieldManager").cloned(),
        dry_run: query.get("dryRun").is_some_and(|v| v == "All"),
        force: is_true(query.get("force")),
    };
    if let Some(value) = query.get("dryRun").filter(|v| *v != "All") {
        return Err(ApiError::bad_request(format!(
            "Unsupported value: {value:?}: supported values: \"All\""
        )));
    }
    let ok = |value: Value| Ok((StatusCode::OK, axum::Json(value)).into_response());
    match (route(path)?, method.clone()) {
        (Route::Version, Method::GET) => ok(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"
        })),
        (Route::CoreVersions, Method::GET) => ok(resources::core_versions()),
        (Route::Groups, Method::GET) => ok(resources::group_list()),
        (Route::Resources { group, version }, Method::GET) => {
            resources::resource_list(&group, &version).map_or_else(|| Err(ApiError::no_route()), ok)
        }
        (Route::Collection { rt, namespace }, Method::GET) => {
            let filter = Filter {
                namespace,
                labels: LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
                    .map_err(ApiError::bad_request)?,
                fields: FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
                    .map_err(ApiError::bad_request)?,
            };
            if is_true(query.get("watch")) {
                watch(shared, rt, filter, query)
            } else {
                ok(list(store, rt, &filter, query)?)
            }
        }
        (Route::Collection { rt, namespace }, Method::POST) => {
            let namespace = match (rt.namespaced, namespace) {
                (true, Some(ns)) => ns,
                (false, None) => String::new(),
                _ => return Err(ApiError::no_route()),
            };
            let object = store.create(rt, &namespace, parse_json(body)?, &options)?;
            Ok((StatusCode::CREATED, axum::Json(object)).into_response())
        }
        (
            Route::Object {
                rt,
                namespace,
                name,
                ..
            },
            Method::GET,
        ) => ok(store.get(rt, &namespace, &name)?),
        (
            Route::Object {
                rt,
                namespace,
                name,
                scope,
            },
            Method::PUT,
        ) => ok(store.replace(rt, &namespace, &name, parse_json(body)?, scope, &options)?),
        (
            Route::Object {
                rt,
                namespace,
                name,
                scope,
            },
            Method::PATCH,
        ) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let media_type = content_type.split(';').next().unwrap_or_default().trim();
            let patch = match media_type {
                "application/merge-patch+json" => PatchBody::Merge(parse_json(body)?),
                "application/json-patch+json" => PatchBody::Json(parse_json(body)?),
                "application/apply-patch+yaml" => PatchBody::Apply(parse_yaml(body)?),
                _ => return Err(ApiError::unsupported_media_type(content_type)),
            };
            if options.force && !matches!(patch, PatchBody::Apply(_)) {
                return Err(ApiError::bad_request(
                    "force may only be set for server-side apply",
                ));
            }
            let (object, created) = store.patch(rt, &namespace, &name, patch, scope, &options)?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((code, axum::Json(object)).into_response())
        }
        (
            Route::Object {
                rt,
                namespace,
                name,
                scope: Scope::Main,
            },
            Method::DELETE,
        ) => {
            let options = delete_options(query, body)?;
            let deleted = store.delete(rt, &namespace, &name, &options)?;
            ok(json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "group": rt.group,
                    "kind": rt.plural,
                    "uid": deleted.pointer("/metadata/uid").cloned().unwrap_or_default(),
                },
            }))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// kube sends applied configurations as JSON, which is also YAML.
fn parse_yaml(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).or_else(|_| {
        let text = std::str::from_utf8(body)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))?;
        serde_saphyr::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))
    })
}

fn delete_options(
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<DeleteOptions, ApiError> {
    let from_body: Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(body)?
    };
    let policy = query
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| from_body.get("propagationPolicy").and_then(Value::as_str));
    let propagation = match policy {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    let precondition = |field: &str| {
        from_body
            .pointer(&format!("/preconditions/{field}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Ok(DeleteOptions {
        propagation,
        precondition_uid: precondition("uid"),
        precondition_resource_version: precondition("resourceVersion"),
        dry_run: query.get("dryRun").is_some_and(|v| v == "All")
            || from_body
                .get("dryRun")
                .is_some_and(|v| *v == json!(["All"])),
    })
}

/// A list honouring `limit` and `continue` (the token is the offset into the
/// sorted result). Its items carry no `apiVersion` or `kind`, as a real server's.
fn list(
    store: &Store,
    rt: &'static ResourceType,
    filter: &Filter,
    query: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let start = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid continue token {token:?}")))?,
        None => 0,
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let (mut page, total, resource_version) = store.list(rt, filter, start, limit);
    // Like a real server: the list says what its items are; they do not.
    for item in &mut page {
        if let Value::Object(object) = item {
            object.remove("apiVersion");
            object.remove("kind");
        }
    }
    let end = start.saturating_add(page.len());
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if end < total {
        metadata["continue"] = json!(end.to_string());
        metadata["remainingItemCount"] = json!(total - end);
    }
    Ok(json!({
        "kind": rt.list_kind(),
        "apiVersion": rt.api_version(),
        "metadata": metadata,
        "items": page,
    }))
}

/// Streams newline-delimited watch events until `timeoutSeconds` or the client goes away.
fn watch(
    shared: &Arc<Shared>,
    rt: &'static ResourceType,
    filter: Filter,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let from = match query.get("resourceVersion").filter(|v| !v.is_empty()) {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
        ),
        None => None,
    };
    let bookmarks = is_true(query.get("allowWatchBookmarks"));
    let initial_events = is_true(query.get("sendInitialEvents"));
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let from = if initial_events { None } else { from };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    match shared.store.watch(rt, &filter, from) {
        Ok(start) => {
            tokio::spawn(pump(
                shared.clone(),
                rt,
                filter,
                start,
                tx,
                timeout,
                bookmarks,
                initial_events,
            ));
        }
        // A real server reports an expired resource version inside the stream.
        Err(error) if error.code == 410 => {
            let line = line(json!({"type": "ERROR", "object": error.to_status()}));
            let _ = tx.try_send(line);
        }
        Err(error) => return Err(error),
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("building the watch response").into_response()))
}

fn is_held(shared: &Shared, rt: &ResourceType) -> bool {
    shared
        .held_watch_kinds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|kind| kind == rt.kind)
}

fn line(event: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&event).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark(rt: &ResourceType, resource_version: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(json!({
        "type": "BOOKMARK",
        "object": {"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": metadata},
    }))
}

// The query's options, plus the server for held kinds.
#[allow(clippy::too_many_arguments)]
async fn pump(
    shared: Arc<Shared>,
    rt: &'static ResourceType,
    filter: Filter,
    mut start: super::store::WatchStart,
    tx: mpsc::Sender<Bytes>,
    timeout: Duration,
    bookmarks: bool,
    initial_events: bool,
) {
    let mut last = start.resource_version;
    for (kind, object) in start.initial.drain(..) {
        if tx
            .send(line(json!({"type": kind, "object": object})))
            .await
            .is_err()
        {
            return;
        }
    }
    if initial_events && tx.send(bookmark(rt, last, true)).await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            received = start.live.recv() => match received {
                Ok(change) => {
                    while is_held(&shared, rt) {
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    last = change.resource_version;
                    if let Some((kind, object)) = filter.event_for(rt, &change)
                        && tx.send(line(json!({"type": kind, "object": object}))).await.is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let gone = ApiError::gone("the watch fell behind; resource version too old");
                    let _ = tx.send(line(json!({"type": "ERROR", "object": gone.to_status()}))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = start.expired.changed() => {
                let gone = ApiError::gone("too old resource version: the watch expired");
                let _ = tx.send(line(json!({"type": "ERROR", "object": gone.to_status()}))).await;
                return;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if bookmarks {
                    let _ = tx.send(bookmark(rt, last, false)).await;
                }
                return;
            }
            _ = tx.closed() => return,
        }
    }
}
