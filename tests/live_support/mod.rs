//! A real `stackd run` against the in-process API server (or the cluster named
//! by `KUBECONFIG_E2E`) and a Git repository over smart HTTP ([`Setup`]), and
//! [`Live`], one started, with readers for every surface that reports a stack:
//! the page, `/api/v1/stacks`, the Stack, its Events and `/metrics`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, ListParams};
use serde_json::Value;
use stackd::crd::Stack;

pub use crate::common::eventually;
use crate::common::{self, Stackd};
use crate::fake_api::{TestCluster, test_client, unique};
use crate::git_support;

/// A stack of a web server with a published port and a config, and a
/// database with a volume: a ConfigMap, Services, a Deployment and a
/// StatefulSet.
pub const COMPOSE: &str = "services:
  web:
    image: nginx:1.27
    ports: [\"8080:80\"]
    configs:
      - source: site
        target: /usr/share/nginx/html/index.html
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: example
    volumes: [\"data:/var/lib/postgresql/data\"]
volumes:
  data: {}
configs:
  site:
    content: hello
";

/// What a live `stackd run` is started against: the test cluster, the
/// repository `apps` (committed to by the test) served over smart HTTP from
/// `dir`, and a run id that keeps this run's names apart on a shared cluster.
pub struct Setup {
    pub cluster: TestCluster,
    pub upstream: git_support::Upstream,
    pub git: git_support::HttpServer,
    pub run: String,
    pub dir: tempfile::TempDir,
}

impl Setup {
    /// Names start with `prefix`.
    pub async fn new(prefix: &str) -> Setup {
        let cluster = test_client().await;
        let dir = tempfile::tempdir().unwrap();
        let upstream = git_support::Upstream::new(dir.path(), "apps");
        let git = git_support::HttpServer::start(dir.path(), None).await;
        let run = unique(prefix);
        Setup {
            cluster,
            upstream,
            git,
            run,
            dir,
        }
    }

    /// `{run}-<name>`: a stack's name (and namespace).
    pub fn stack(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }

    /// `stackd run` following `apps` with `settings` (indented YAML lines of
    /// the repository), not started yet.
    pub fn stackd(&self, settings: &str) -> Stackd {
        self.stackd_with(&common::apps_config(&self.git.url("apps"), settings))
    }

    /// `stackd run` with the configuration `config`, not started yet.
    pub fn stackd_with(&self, config: &str) -> Stackd {
        let dir = self.dir.path();
        Stackd::new(dir, self.cluster.kubeconfig(dir), config)
    }
}

pub struct Live {
    pub cluster: TestCluster,
    pub upstream: git_support::Upstream,
    pub git: git_support::HttpServer,
    pub daemon: common::Daemon,
    /// `http://127.0.0.1:<port>` of the daemon.
    pub base: String,
    pub port: u16,
    /// Distinguishes this run's stacks (and so namespaces) on a shared cluster.
    pub run: String,
    pub http: reqwest::Client,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Live {
    /// Commits `files` (paths under `stacks/`, `{run}` replaced by the run's
    /// prefix) and starts `stackd run` following the repository every second.
    /// `gone` is a second repository's files, if any (named `gone`).
    pub async fn start(files: &[(&str, &str)], gone: &[(&str, &str)]) -> Live {
        Live::start_with(files, gone, "", |upstream| {
            upstream.commit("first");
        })
        .await
    }

    /// [`Live::start`], with `apps_extra` (indented YAML lines) added to the
    /// `apps` repository's settings and the first commit made by `commit`.
    pub async fn start_with(
        files: &[(&str, &str)],
        gone: &[(&str, &str)],
        apps_extra: &str,
        commit: impl FnOnce(&git_support::Upstream),
    ) -> Live {
        let setup = Setup::new("t").await;
        let run = &setup.run;
        for (path, content) in files {
            setup.upstream.write(&path.replace("{run}", run), content);
        }
        commit(&setup.upstream);
        let mut extra_config = String::new();
        if !gone.is_empty() {
            let second = git_support::Upstream::new(setup.dir.path(), "gone");
            for (path, content) in gone {
                second.write(&path.replace("{run}", run), content);
            }
            second.commit("first");
            extra_config = format!(
                "  - name: gone\n    url: {}\n    ref: main\n    paths: [\"stacks/*\"]\n    interval: 1s\n",
                setup.git.url("gone")
            );
        }
        let settings = format!("    ref: main\n    interval: 1s\n{apps_extra}");
        let config = common::apps_config(&setup.git.url("apps"), &settings) + &extra_config;
        let stackd = setup.stackd_with(&config);
        let Setup {
            cluster,
            upstream,
            git,
            run,
            dir,
        } = setup;
        Live {
            cluster,
            upstream,
            git,
            daemon: stackd.start("stackd.log"),
            base: stackd.base(),
            port: stackd.port,
            run,
            http: reqwest::Client::new(),
            log: dir.path().join("stackd.log"),
            dir,
        }
    }

    /// `stacks/{run}-<name>`'s stack name (and namespace).
    pub fn stack(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }

    pub fn write(&self, path: &str, content: &str) {
        self.upstream
            .write(&path.replace("{run}", &self.run), content);
    }

    pub async fn text(&self, path: &str) -> Option<String> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        response.text().await.ok()
    }

    pub async fn json(&self, path: &str) -> Option<Value> {
        serde_json::from_str(&self.text(path).await?).ok()
    }

    /// The stack as `/api/v1/stacks` lists it.
    pub async fn api_stack(&self, name: &str) -> Option<Value> {
        let all = self.json("/api/v1/stacks").await?;
        let list = all
            .get("stacks")
            .and_then(Value::as_array)
            .or(all.as_array())?;
        list.iter()
            .find(|s| s["name"] == name && s["namespace"] == name)
            .cloned()
    }

    pub async fn stack_object(&self, name: &str) -> Option<Stack> {
        let api: Api<Stack> = Api::namespaced(self.cluster.client.clone(), name);
        api.get_opt(name).await.ok().flatten()
    }

    /// The Events about the Stack `name`: (type, reason, note).
    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.cluster.client.clone(), name);
        let Ok(list) = api.list(&ListParams::default()).await else {
            return Vec::new();
        };
        list.items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("Stack") && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits until the Stack `name`, in its namespace `name`, says `revision` was applied.
pub async fn applied(client: &kube::Client, name: &str, revision: &str) {
    let api: Api<Stack> = Api::namespaced(client.clone(), name);
    eventually("the revision applied", 90, async || {
        let status = api.get_opt(name).await.ok()??.status?;
        (status.last_applied_revision.as_deref() == Some(revision)).then_some(())
    })
    .await;
}

/// The Stack's `Ready` condition reason.
pub fn ready_reason(stack: &Stack) -> Option<String> {
    stack
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}
