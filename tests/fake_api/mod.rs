//! An in-process Kubernetes API server for reconciler tests.
//!
//! Serves the kinds stackd touches over real HTTP on 127.0.0.1 so a plain
//! `kube::Client` talks to it. It keeps the semantics the reconciler relies on
//! (resource versions, generations, status subresources, immutable fields,
//! server-side apply field ownership, garbage collection, watches) and answers
//! errors with `Status` bodies like the real server. Tests can inject faults and
//! read the request log. Not implemented: defaulting (except Service clusterIP),
//! strategic merge patch, associative (keyed) lists in SSA, finalizers.
//!
//! Include from a test file with `#[path = "fake_api/mod.rs"] mod fake_api;`.
#![allow(dead_code, unused_imports)]

pub mod error;
pub mod faults;
pub mod fields;
pub mod http;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod store;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde::Serialize;
use serde_json::Value;

pub use faults::{Access, FaultAction, FaultRule, LoggedRequest, write_target};
pub use store::WriteOptions;

/// How the server behaves under load, to see what a real one costs: each
/// request waits `latency` before it is served, and beyond `max_in_flight`
/// requests being served (watches excluded, as kube-apiserver's
/// `--max-requests-inflight`) the answer is 429 with `Retry-After: 1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub latency: Duration,
    pub max_in_flight: Option<usize>,
}

impl Settings {
    /// From `STACKD_BENCH_LATENCY` (`20ms`, `1s`; default none) and
    /// `STACKD_BENCH_MAX_INFLIGHT` (a count; default no limit).
    pub fn from_env() -> Settings {
        let latency = std::env::var("STACKD_BENCH_LATENCY")
            .ok()
            .map(|text| {
                parse_duration(&text)
                    .unwrap_or_else(|| panic!("STACKD_BENCH_LATENCY={text:?}: expected e.g. 20ms"))
            })
            .unwrap_or_default();
        let max_in_flight = std::env::var("STACKD_BENCH_MAX_INFLIGHT").ok().map(|text| {
            text.parse()
                .unwrap_or_else(|_| panic!("STACKD_BENCH_MAX_INFLIGHT={text:?}: expected a count"))
        });
        Settings {
            latency,
            max_in_flight,
        }
    }
}

/// `20ms`, `1.5s`, `0`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number.trim().parse().ok()?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        _ => return None,
    };
    (seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// A running fake API server; stops when dropped.
pub struct FakeApiServer {
    shared: Arc<http::Shared>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Starts a server on a free port and returns it with a client for it.
    pub async fn start() -> (FakeApiServer, kube::Client) {
        Self::start_with(Settings::default()).await
    }

    /// Starts a server with latency and an in-flight limit (see [`Settings`]).
    pub async fn start_with(settings: Settings) -> (FakeApiServer, kube::Client) {
        let shared = Arc::new(http::Shared {
            settings,
            ..http::Shared::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let app = http::router(shared.clone());
        let task = tokio::spawn(async move {
            // Serving only ends when the task is aborted.
            let _ = axum::serve(listener, app).await;
        });
        let url = format!("http://{address}");
        let server = FakeApiServer { shared, url, task };
        let client = server.client();
        (server, client)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Another client for the same server.
    /// Writes `dir/kubeconfig` for this server (no authentication), as kube
    /// would find a real cluster's.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\ncurrent-context: fake\nusers: [{{name: fake, user: {{}}}}]\n",
                self.url
            ),
        )
        .unwrap();
        path
    }

    pub fn client(&self) -> kube::Client {
        let uri = self.url.parse().expect("the server URL is a valid URI");
        let config = kube::Config::new(uri);
        kube::Client::try_from(config).expect("a plain HTTP client always builds")
    }

    /// Stores an object as if created by `seed` (any kind from the resource table,
    /// `apiVersion` and `kind` required). Returns the stored object.
    pub fn seed(&self, object: &impl Serialize) -> Value {
        let value = serde_json::to_value(object).expect("seed objects serialise");
        let text = |pointer: &str| {
            value
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (api_version, kind) = (text("/apiVersion"), text("/kind"));
        let rt = resources::find_kind(&api_version, &kind)
            .unwrap_or_else(|| panic!("the fake does not serve {api_version} {kind}"));
        let namespace = match text("/metadata/namespace") {
            ns if ns.is_empty() && rt.namespaced => "default".to_string(),
            ns => ns,
        };
        let options = WriteOptions {
            field_manager: Some("seed".into()),
            ..Default::default()
        };
        self.shared
            .store
            .create(rt, &namespace, value, &options)
            .unwrap_or_else(|e| panic!("seeding {kind}: {}", e.message))
    }

    /// Creates a namespace.
    pub fn seed_namespace(&self, name: &str) -> Value {
        self.seed(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    }

    /// The stored object, read directly (no request logged).
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let rt = resources::find_kind(api_version, kind)?;
        self.shared.store.get(rt, namespace, name).ok()
    }

    /// Every stored object, sorted by type, namespace and name.
    pub fn objects(&self) -> Vec<Value> {
        self.shared.store.all_objects()
    }

    /// Stored objects of one kind.
    pub fn objects_of(&self, api_version: &str, kind: &str) -> Vec<Value> {
        self.objects()
            .into_iter()
            .filter(|o| {
                o.get("apiVersion").and_then(Value::as_str) == Some(api_version)
                    && o.get("kind").and_then(Value::as_str) == Some(kind)
            })
            .collect()
    }

    /// The global resource version (bumped on every stored write).
    pub fn resource_version(&self) -> u64 {
        self.shared.store.current_resource_version()
    }

    /// Drops the watch history, so watches from older versions get 410 Gone.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// Ends every open watch with 410 Gone and compacts the history: clients
    /// must list again (kube-runtime's watcher re-lists).
    pub fn expire_watches(&self) {
        self.shared.store.expire_watches();
    }

    /// Refuses (403) every write made impersonating `user`, as RBAC would a
    /// ServiceAccount with no role.
    pub fn forbid_user(&self, user: &str) {
        self.shared
            .forbidden_users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(user.to_string());
    }

    pub fn inject(&self, rule: FaultRule) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rule);
    }

    /// Answer `code` to matching requests `times` times.
    pub fn fail(&self, method: Method, path_contains: &str, code: u16, times: usize) {
        self.inject(
            FaultRule::new(Some(method), path_contains, FaultAction::Fail(code)).times(times),
        );
    }

    /// Answer 429 with `Retry-After` to matching requests `times` times.
    pub fn throttle(
        &self,
        method: Method,
        path_contains: &str,
        retry_after: Duration,
        times: usize,
    ) {
        let action = FaultAction::TooManyRequests { retry_after };
        self.inject(FaultRule::new(Some(method), path_contains, action).times(times));
    }

    pub fn clear_faults(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests that could have changed state (dry runs excluded).
    pub fn writes(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(LoggedRequest::is_write)
            .collect()
    }

    /// Holds back live watch events for objects of `kind` (not lost: delivered
    /// in order on [`release_watch_events`](Self::release_watch_events)), so a
    /// client's cache lags behind its own writes.
    pub fn hold_watch_events(&self, kind: &str) {
        self.shared
            .held_watch_kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(kind.to_string());
    }

    pub fn release_watch_events(&self) {
        self.shared
            .held_watch_kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Every stored write from now on, as watches see them (none held back).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Arc<store::Change>> {
        self.shared.store.subscribe()
    }

    pub fn clear_requests(&self) {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// A cluster for a test: a real one named by `KUBECONFIG_E2E`, or the fake.
pub struct TestCluster {
    pub client: kube::Client,
    /// `None` on a real cluster: tests skip what needs the fake's internals.
    pub fake: Option<FakeApiServer>,
}

impl TestCluster {
    /// The fake, or `None` after saying on stderr which check is skipped.
    pub fn fake_or_skip(&self, what: &str) -> Option<&FakeApiServer> {
        if self.fake.is_none() {
            eprintln!("real cluster: skipping {what} (needs the in-process API server)");
        }
        self.fake.as_ref()
    }

    /// The kubeconfig a `stackd run` under test uses: the fake's, written in
    /// `dir`, or the real cluster's named by `KUBECONFIG_E2E`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        match &self.fake {
            Some(fake) => fake.write_kubeconfig(dir),
            None => PathBuf::from(
                std::env::var_os("KUBECONFIG_E2E").expect("KUBECONFIG_E2E names the real cluster"),
            ),
        }
    }

    /// On a real cluster, deletes the namespaces a test made (the fake goes
    /// with the test).
    pub async fn delete_namespaces(&self, names: &[String]) {
        if self.fake.is_some() {
            return;
        }
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.client.clone());
        for name in names {
            let _ = namespaces.delete(name, &Default::default()).await;
        }
    }
}

/// `prefix` and a random suffix: a name no earlier run on a real cluster left
/// behind.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// The envtest convention: `KUBECONFIG_E2E` names a kubeconfig for a real
/// cluster; otherwise use the in-process API server.
pub async fn test_client() -> TestCluster {
    match std::env::var_os("KUBECONFIG_E2E") {
        Some(path) => {
            eprintln!(
                "KUBECONFIG_E2E={}: using that real cluster",
                path.to_string_lossy()
            );
            let kubeconfig =
                kube::config::Kubeconfig::read_from(&path).expect("reading KUBECONFIG_E2E");
            let options = kube::config::KubeConfigOptions::default();
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .expect("a usable kubeconfig in KUBECONFIG_E2E");
            let client = kube::Client::try_from(config).expect("a client for KUBECONFIG_E2E");
            TestCluster { client, fake: None }
        }
        None => {
            eprintln!("KUBECONFIG_E2E not set: using the in-process API server");
            let (fake, client) = FakeApiServer::start().await;
            TestCluster {
                client,
                fake: Some(fake),
            }
        }
    }
}
