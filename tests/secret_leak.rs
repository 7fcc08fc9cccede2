//! Secrets never reach logs, events, status, metrics or the page (issue 7).
//!
//! Runs the real `stackd run` binary against the in-process API server (or the
//! cluster named by `KUBECONFIG_E2E`) and a repository served over smart HTTP
//! with basic auth. Every secret has a distinctive random value and travels
//! every path it can: compose secrets from a file and from a `.env` variable
//! (which become Kubernetes Secrets), the Git password (right, and a wrong one
//! for a second repository), the webhook secret (right and wrong signatures),
//! the API token (right and wrong bearer), a failed Secret apply, and a commit
//! whose `.env` files fail to load right next to the secret values. The forge
//! token of `commitStatus` (refused by the mock forge), and the URLs and HMAC
//! secret of `notifications` travel with every status and notification. Then
//! everything a reader could see is collected: the daemon's logs (JSON at debug
//! in one run, text at trace in the other), every API object except the data of
//! the Secrets stackd created, `/metrics`, the page, every stack page and every
//! JSON route, and the HTTP answers. No value may appear in any of them, plain,
//! URL-encoded or base64 at any alignment. The Secrets' data is the positive
//! control: it holds the values, and the same search finds them there; so are
//! the token, URLs and signatures the mock forge and webhook server received.
//! With `sops` and `age-keygen` at hand (always under CI), a fourth stack reads
//! SOPS-encrypted files: a secret file and a `.env` variable interpolated into
//! the service's environment; their decrypted values and the age identity are
//! searched for too.
//! `stackd diff` against a changed Secret, text and JSON, is searched the same way.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;
mod sops_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use axum::http::Method;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use stackd::git::webhook::sign_sha256;

use common::{Stackd, eventually};
use fake_api::{FaultAction, FaultRule, TestCluster, test_client};

/// One secret with a value no test fixture or log line could contain by chance.
struct Known {
    label: &'static str,
    value: String,
}

impl Known {
    fn new(label: &'static str) -> Known {
        // `+/` make the URL-encoded and base64 forms differ from the plain one.
        let value = format!("s3cr3t-{label}-{:016x}+/", rand::random::<u64>());
        Known { label, value }
    }

    /// Every form that would betray the value, with its name: the value, its
    /// random core (which survives HTML, JSON and shell escaping), URL-encoded,
    /// and the part of its base64 that is the same wherever it starts in a
    /// longer encoded text (three alignments, standard and URL-safe alphabets).
    fn forms(&self) -> Vec<(String, String)> {
        let core = self
            .value
            .trim_start_matches(&format!("s3cr3t-{}-", self.label))
            .trim_end_matches("+/");
        let mut forms = vec![
            ("plain".to_string(), self.value.clone()),
            ("random core".to_string(), core.to_string()),
            ("URL-encoded".to_string(), url_encode(&self.value)),
        ];
        for (alphabet, engine) in [("base64", &STANDARD), ("base64url", &URL_SAFE)] {
            for offset in 0..3 {
                let mut bytes = vec![0u8; offset];
                bytes.extend_from_slice(self.value.as_bytes());
                let encoded = engine.encode(&bytes);
                // The first quantum mixes in what precedes the value, the last
                // one what follows it: only the middle is fixed.
                let start = if offset == 0 { 0 } else { 4 };
                let stable = &encoded[start..encoded.len() - 4];
                forms.push((format!("{alphabet} at offset {offset}"), stable.to_string()));
            }
        }
        forms
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The known values found in `text`, as "label (form)".
fn found_in(text: &str, secrets: &[&Known]) -> Vec<String> {
    let mut found = Vec::new();
    for secret in secrets {
        for (form, needle) in secret.forms() {
            if text.contains(&needle) {
                found.push(format!("{} ({form})", secret.label));
            }
        }
    }
    found
}

/// Everything collected for the search: (where it came from, its text).
#[derive(Default)]
struct Surfaces(Vec<(String, String)>);

impl Surfaces {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.0.push((place.into(), text.into()));
    }

    fn text_of(&self, prefix: &str) -> String {
        self.0
            .iter()
            .filter(|(place, _)| place.starts_with(prefix))
            .map(|(_, text)| text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every leak: "label (form) in place", with the surrounding text.
    fn leaks(&self, secrets: &[&Known]) -> Vec<String> {
        let mut leaks = Vec::new();
        for (place, text) in &self.0 {
            for hit in found_in(text, secrets) {
                leaks.push(format!("{hit} in {place}"));
            }
        }
        leaks
    }
}

/// The stacks of the test repository: secrets from a file and from `.env`.
const VAULT_COMPOSE: &str = "services:\n  app:\n    image: nginx:1.27\n    secrets: [db_password, api_key]\nsecrets:\n  db_password:\n    file: ./db_password.txt\n  api_key:\n    environment: API_KEY\n";
const SEALED_COMPOSE: &str = "services:\n  app:\n    image: nginx:1.27\n    environment:\n      API_URL: \"https://api.example.com/?key=${SOPS_KEY}\"\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token.yaml\n";

/// The stacks of the test repository; `sealed` reads SOPS files.
fn stack_names(sops: Option<&sops_support::Kit>) -> Vec<&'static str> {
    let mut names = vec!["vault", "counter", "interp"];
    if sops.is_some() {
        names.push("sealed");
    }
    names
}

const TOKEN_COMPOSE: &str = "services:\n  app:\n    image: nginx:1.27\n    deploy:\n      replicas: ${REPLICAS}\n    secrets: [token]\nsecrets:\n  token:\n    environment: TOKEN\n";

struct Scenario {
    /// Distinguishes this run's namespaces and repositories on a shared cluster.
    run: String,
    file_secret: Known,
    env_secret: Known,
    git_password: Known,
    wrong_git_password: Known,
    webhook_secret: Known,
    wrong_webhook_secret: Known,
    api_token: Known,
    wrong_api_token: Known,
    forge_token: Known,
    hook_url: Known,
    hook_secret: Known,
    slack_url: Known,
    sops_file: Known,
    sops_env: Known,
}

impl Scenario {
    fn new() -> Scenario {
        Scenario {
            run: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            file_secret: Known::new("file"),
            env_secret: Known::new("env"),
            git_password: Known::new("gitpw"),
            wrong_git_password: Known::new("wronggitpw"),
            webhook_secret: Known::new("hook"),
            wrong_webhook_secret: Known::new("wronghook"),
            api_token: Known::new("token"),
            wrong_api_token: Known::new("wrongtoken"),
            forge_token: Known::new("forgetoken"),
            hook_url: Known::new("hookurl"),
            hook_secret: Known::new("hooksecret"),
            slack_url: Known::new("slackurl"),
            sops_file: Known::new("sopsfile"),
            sops_env: Known::new("sopsenv"),
        }
    }

    /// Presented credentials count too: a wrong one may well be a real secret elsewhere.
    fn all(&self) -> Vec<&Known> {
        vec![
            &self.file_secret,
            &self.env_secret,
            &self.git_password,
            &self.wrong_git_password,
            &self.webhook_secret,
            &self.wrong_webhook_secret,
            &self.api_token,
            &self.wrong_api_token,
            &self.forge_token,
            &self.hook_url,
            &self.hook_secret,
            &self.slack_url,
            &self.sops_file,
            &self.sops_env,
        ]
    }

    fn namespace(&self, stack: &str) -> String {
        format!("{stack}-{}", self.run)
    }

    fn repository(&self, name: &str) -> String {
        format!("{name}-{}", self.run)
    }

    fn config(
        &self,
        dir: &Path,
        git: &git_support::HttpServer,
        forge: &Forge,
        sops: Option<&sops_support::Kit>,
    ) -> String {
        let file = |name: &str, content: &str| {
            git_support::secret_file(dir, name, &format!("{content}\n"))
                .display()
                .to_string()
        };
        let token = file("api-token", &self.api_token.value);
        let password = file("git-password", &self.git_password.value);
        let wrong_password = file("wrong-git-password", &self.wrong_git_password.value);
        let hook = file("webhook-secret", &self.webhook_secret.value);
        let forge_token = file("forge-token", &self.forge_token.value);
        let hook_url = file(
            "hook-url",
            &format!("{}/hooks/{}", forge.url, self.hook_url.value),
        );
        let hook_secret = file("hook-secret", &self.hook_secret.value);
        let slack_url = file(
            "slack-url",
            &format!("{}/slack/{}", forge.url, self.slack_url.value),
        );
        let notifications = format!(
            "externalUrl: https://stackd.example.com\nnotifications:\n  - {{name: ops, type: webhook, urlFile: {hook_url}, secretFile: {hook_secret}}}\n  - {{name: chat, type: slack, urlFile: {slack_url}}}\n"
        );
        let stacks = stack_names(sops)
            .iter()
            .map(|s| format!("      {s}: {{namespace: {}}}\n", self.namespace(s)))
            .collect::<String>();
        let decryption = match sops {
            Some(kit) => format!(
                "    decryption: {{ageKeyFile: {}}}\n",
                kit.key_file.display()
            ),
            None => String::new(),
        };
        format!(
            "{notifications}apiTokenFile: {token}\nrepositories:\n  - name: {apps}\n    url: {apps_url}\n    paths: [\"stacks/*\"]\n    interval: 1h\n    auth: {{type: https, username: stackd, passwordFile: {password}}}\n    webhookSecretFile: {hook}\n    commitStatus: {{provider: gitea, tokenFile: {forge_token}, apiUrl: \"{forge_url}\", repository: team/apps}}\n{decryption}    stacks:\n{stacks}  - name: {locked}\n    url: {locked_url}\n    interval: 1h\n    auth: {{type: https, username: stackd, passwordFile: {wrong_password}}}\n",
            apps = self.repository("apps"),
            apps_url = git.url("apps"),
            locked = self.repository("locked"),
            locked_url = git.url("locked"),
            forge_url = forge.url,
        )
    }

    /// The first commit: three stacks whose secrets render into Kubernetes Secrets.
    fn write_good_commit(
        &self,
        upstream: &git_support::Upstream,
        sops: Option<&sops_support::Kit>,
    ) {
        if let Some(kit) = sops {
            let file = kit.encrypt(
                "token.yaml",
                format!("token: {}\n", self.sops_file.value).as_bytes(),
            );
            let env = kit.encrypt(
                ".env",
                format!("SOPS_KEY={}\n", self.sops_env.value).as_bytes(),
            );
            upstream.write("stacks/sealed/compose.yaml", SEALED_COMPOSE);
            upstream.write(
                "stacks/sealed/token.yaml",
                std::str::from_utf8(&file).unwrap(),
            );
            upstream.write("stacks/sealed/.env", std::str::from_utf8(&env).unwrap());
        }
        let env = &self.env_secret.value;
        upstream.write("stacks/vault/compose.yaml", VAULT_COMPOSE);
        upstream.write("stacks/vault/db_password.txt", &self.file_secret.value);
        upstream.write("stacks/vault/.env", &format!("API_KEY={env}\n"));
        upstream.write("stacks/counter/compose.yaml", TOKEN_COMPOSE);
        upstream.write("stacks/counter/.env", &format!("TOKEN={env}\nREPLICAS=1\n"));
        upstream.write("stacks/interp/compose.yaml", TOKEN_COMPOSE);
        upstream.write(
            "stacks/interp/.env",
            &format!("REPLICAS=1\nTOKEN='{env}'\n"),
        );
        upstream.commit("three stacks with secrets");
    }

    /// The second commit: each stack fails to load right next to a secret value.
    fn write_broken_commit(&self, upstream: &git_support::Upstream) {
        let env = &self.env_secret.value;
        // A forgotten closing quote.
        upstream.write("stacks/vault/.env", &format!("API_KEY=\"{env}\n"));
        // The secret variable interpolated into a typed field by mistake.
        upstream.write(
            "stacks/counter/.env",
            &format!("TOKEN={env}\nREPLICAS=${{TOKEN}}\n"),
        );
        // A `${` inside an unquoted secret value.
        upstream.write(
            "stacks/interp/.env",
            &format!("REPLICAS=1\nTOKEN={env}${{\n"),
        );
        upstream.commit("break every stack next to its secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_json_debug_logs_objects_or_http() {
    secrets_stay_secret("json", "debug").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_text_trace_logs_objects_or_http() {
    secrets_stay_secret("text", "trace").await;
}

/// `stackd diff` (text and `-o json`) shows that a Secret's values changed, never
/// the old value in the cluster nor the new one in the repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_stackd_diff_text_or_json() {
    let cluster = test_client().await;
    let scenario = Scenario::new();
    let (old, new, env) = (Known::new("old"), Known::new("new"), Known::new("env"));
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("vault");
    std::fs::create_dir_all(&stack).unwrap();
    std::fs::write(stack.join("compose.yaml"), VAULT_COMPOSE).unwrap();
    std::fs::write(stack.join("db_password.txt"), &new.value).unwrap();
    std::fs::write(stack.join(".env"), format!("API_KEY={}\n", env.value)).unwrap();
    let namespace = scenario.namespace("vault");
    let namespaces: Api<DynamicObject> =
        Api::all_with(cluster.client.clone(), &namespace_resource());
    let labels = json!({"app.kubernetes.io/managed-by": "stackd", "stackd.dev/stack": "vault"});
    namespaces
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": namespace, "labels": labels}}))
            .unwrap(),
        )
        .await
        .unwrap();
    // Last week's password, applied by stackd.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(cluster.client.clone(), &namespace);
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "vault-db-password", "namespace": namespace, "labels": labels},
                "type": "Opaque", "data": {"db_password": STANDARD.encode(&old.value)}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let kubeconfig = cluster.kubeconfig(dir.path());
    let mut surfaces = Surfaces::default();
    for format in ["yaml", "json"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_stackd"))
            .args(["diff", "--namespace", &namespace, "-o", format])
            .arg(&stack)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("NO_COLOR")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(1), "{stdout}");
        surfaces.add(format!("stackd diff -o {format} (stdout)"), stdout);
        surfaces.add(
            format!("stackd diff -o {format} (stderr)"),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
    }
    cleanup(&cluster, std::slice::from_ref(&namespace)).await;
    // The positive control: the diff did see the Secret change.
    let text = surfaces.text_of("stackd diff -o yaml (stdout)");
    assert!(
        text.contains("@@ /data/db_password @@\n-(changed)\n+(changed)\n"),
        "{text}"
    );
    let json: Value =
        serde_json::from_str(&surfaces.text_of("stackd diff -o json (stdout)")).unwrap();
    let secret = json
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "vault-db-password")
        .unwrap();
    assert_eq!(
        secret["changes"][0],
        json!({"path": "/data/db_password", "old": "(changed)", "new": "(changed)", "redacted": true})
    );
    // A created Secret is listed by name only.
    assert!(text.contains("+ create Secret "), "{text}");
    let leaks = surfaces.leaks(&[&old, &new, &env]);
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
}

async fn secrets_stay_secret(log_format: &str, rust_log: &str) {
    let cluster = test_client().await;
    let scenario = Scenario::new();
    let dir = tempfile::tempdir().unwrap();
    let upstream = git_support::Upstream::new(dir.path(), "apps");
    let sops = sops_support::Kit::new();
    scenario.write_good_commit(&upstream, sops.as_ref());
    let locked = git_support::Upstream::new(dir.path(), "locked");
    locked.write(
        "stacks/x/compose.yaml",
        "services:\n  x:\n    image: nginx\n",
    );
    locked.commit("never fetched");
    let git =
        git_support::HttpServer::start(dir.path(), Some(("stackd", &scenario.git_password.value)))
            .await;
    if let Some(fake) = &cluster.fake {
        // The first Secret apply fails: the error reaches the Stack's status and an Event.
        fake.inject(
            FaultRule::new(Some(Method::PATCH), "/secrets/", FaultAction::Fail(500)).times(1),
        );
    }
    let secrets_dir = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets_dir).unwrap();
    let forge = Forge::start().await;
    let config = scenario.config(&secrets_dir, &git, &forge, sops.as_ref());
    let stackd = Stackd::new(dir.path(), cluster.kubeconfig(dir.path()), &config);
    let base = stackd.base();
    let logs = Logs::new(dir.path());
    let child = stackd
        .command()
        .args(["--log-format", log_format])
        .env("RUST_LOG", rust_log)
        // Files, not pipes: trace logs would fill a pipe nobody drains.
        .stdout(Stdio::from(std::fs::File::create(&logs.stdout).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&logs.stderr).unwrap()))
        .spawn()
        .unwrap();
    let mut daemon = common::Daemon(child);
    let http = reqwest::Client::new();
    let mut surfaces = Surfaces::default();

    let namespaces: Vec<String> = stack_names(sops.as_ref())
        .iter()
        .map(|s| scenario.namespace(s))
        .collect();
    wait_for_first_apply(&cluster, &namespaces, &upstream.head()).await;
    wait_for_auth_failure(&http, &base, &scenario.repository("locked")).await;
    post_webhooks(&http, &base, &scenario, &git, &mut surfaces).await;
    scenario.write_broken_commit(&upstream);
    post_syncs(&http, &base, &scenario, &mut surfaces).await;
    let load_errors = wait_for_load_errors(&http, &base).await;
    let received = wait_for_notifications(&forge).await;

    collect_http(&http, &base, &mut surfaces).await;
    let secret_data = collect_objects(&cluster, &namespaces, &mut surfaces).await;
    daemon.stop().await;
    let stderr = std::fs::read_to_string(&logs.stderr).unwrap();
    surfaces.add("stderr", stderr.clone());
    surfaces.add("stdout", std::fs::read_to_string(&logs.stdout).unwrap());
    collect_files(&dir.path().join("data"), &mut surfaces);
    if cluster.fake.is_none() {
        cleanup(&cluster, &namespaces).await;
    }

    // Positive controls: the search finds the values where they belong, and
    // what is searched is real, verbose output about these very stacks.
    assert_forge_saw_the_secrets(&received, &scenario);
    for request in &received {
        surfaces.add(format!("{} body", request.path), request.body.clone());
    }
    assert!(
        stderr.contains("commit status refused"),
        "the refused forge token is not logged"
    );
    let found = found_in(
        &secret_data,
        &[
            &scenario.file_secret,
            &scenario.env_secret,
            &scenario.sops_file,
            &scenario.sops_env,
        ],
    );
    let mut expected = vec!["file (base64", "env (base64"];
    if sops.is_some() {
        // `token: <value>` and `https://api.example.com/?key=<value>`, decrypted.
        expected.extend(["sopsfile (base64", "sopsenv (base64"]);
    }
    for label in expected {
        assert!(
            found.iter().any(|f| f.starts_with(label)),
            "{label}…) not in the Secrets: {found:?}"
        );
    }
    let vault = scenario.namespace("vault");
    assert!(stderr.contains(&vault), "the logs never mention the stack");
    match log_format {
        "json" => {
            for line in stderr.lines() {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            }
            assert!(stderr.contains(r#""level":"DEBUG""#), "no debug lines");
        }
        _ => assert!(stderr.contains("TRACE"), "no trace lines"),
    }
    let page = surfaces.text_of("GET /");
    assert!(page.contains(&vault) && page.contains(".env"), "{page}");
    let objects = surfaces.text_of("object ");
    assert!(
        objects.contains("contentHash") && objects.contains("API_KEY"),
        "no Stack spec collected"
    );
    assert!(
        surfaces.text_of("file ").contains("[core]"),
        "no mirror configuration collected"
    );

    let mut secrets = scenario.all();
    // The age identity itself is a secret too.
    let identity = sops.as_ref().map(|kit| Known {
        label: "ageidentity",
        value: std::fs::read_to_string(&kit.key_file)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .to_string(),
    });
    secrets.extend(identity.as_ref());
    if sops.is_some() {
        assert!(
            objects.contains("secretEnvironment"),
            "no sealed Stack collected"
        );
    }
    let leaks = surfaces.leaks(&secrets);
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    assert_still_useful(&load_errors);
}

/// Where the daemon's output goes.
struct Logs {
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Logs {
    fn new(dir: &Path) -> Logs {
        Logs {
            stdout: dir.join("stdout.log"),
            stderr: dir.join("stderr.log"),
        }
    }
}

/// Every stack's Secrets hold data (the values went all the way through), the
/// injected failure became an Event, and every Stack recovered from it.
async fn wait_for_first_apply(cluster: &TestCluster, namespaces: &[String], head: &str) {
    eventually("the Secrets of every stack", 60, async || {
        let secrets = list(cluster, namespaces, "", "v1", "Secret").await;
        let with_data = secrets.iter().filter(|s| s["data"].is_object()).count();
        (with_data >= 4).then_some(())
    })
    .await;
    if cluster.fake.is_some() {
        eventually("the failed Secret apply as an Event", 30, async || {
            let events = list(cluster, namespaces, "events.k8s.io", "v1", "Event").await;
            events
                .iter()
                .any(|e| e["reason"] == "ApplyFailed" && e["type"] == "Warning")
                .then_some(())
        })
        .await;
    }
    eventually("every Stack applied after the retry", 60, async || {
        let stacks = list(cluster, namespaces, "stackd.dev", "v1alpha1", "Stack").await;
        (stacks.len() == namespaces.len()
            && stacks
                .iter()
                .all(|s| s["status"]["lastAppliedRevision"] == head))
        .then_some(())
    })
    .await;
}

/// The repository polled with the wrong password shows why it failed.
async fn wait_for_auth_failure(http: &reqwest::Client, base: &str, repository: &str) {
    eventually("the authentication failure", 30, async || {
        let body = get_json(http, &format!("{base}/api/v1/repositories")).await?;
        let repositories = body["repositories"].as_array()?;
        let locked = repositories.iter().find(|r| r["name"] == repository)?;
        let error = locked["lastError"].as_str()?;
        assert!(error.contains("authentication"), "{error}");
        Some(())
    })
    .await;
}

/// Webhooks signed with the secret and with a wrong one, and GitLab's plain
/// token both ways; the answers are collected.
async fn post_webhooks(
    http: &reqwest::Client,
    base: &str,
    scenario: &Scenario,
    git: &git_support::HttpServer,
    surfaces: &mut Surfaces,
) {
    let github_body = json!({"repository": {"clone_url": git.url("apps")}}).to_string();
    let gitlab_body = json!({"project": {"git_http_url": git.url("apps")}}).to_string();
    let sign = |secret: &Known| sign_sha256(secret.value.as_bytes(), github_body.as_bytes());
    let (right, wrong) = (&scenario.webhook_secret, &scenario.wrong_webhook_secret);
    let requests = [
        (
            "github",
            "x-hub-signature-256",
            sign(right),
            &github_body,
            202,
        ),
        (
            "github",
            "x-hub-signature-256",
            sign(wrong),
            &github_body,
            401,
        ),
        ("generic", "x-signature-256", sign(wrong), &github_body, 401),
        (
            "gitlab",
            "x-gitlab-token",
            right.value.clone(),
            &gitlab_body,
            202,
        ),
        (
            "gitlab",
            "x-gitlab-token",
            wrong.value.clone(),
            &gitlab_body,
            401,
        ),
    ];
    for (provider, header, signature, body, expected) in requests {
        let response = http
            .post(format!("{base}/hooks/{provider}"))
            .header(header, signature)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{provider} webhook");
        surfaces.add(
            format!("webhook answer ({provider}, {expected})"),
            response.text().await.unwrap(),
        );
    }
}

/// The sync endpoint with a wrong token, then the right one (which polls now).
async fn post_syncs(
    http: &reqwest::Client,
    base: &str,
    scenario: &Scenario,
    surfaces: &mut Surfaces,
) {
    let repository = scenario.repository("apps");
    for (token, expected) in [(&scenario.wrong_api_token, 401), (&scenario.api_token, 202)] {
        let response = http
            .post(format!("{base}/api/v1/repositories/{repository}/sync"))
            .bearer_auth(&token.value)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert_eq!(status, expected, "sync with the {} token", token.label);
        surfaces.add(
            format!("sync answer ({expected})"),
            response.text().await.unwrap(),
        );
    }
}

/// The broken commit's load errors, as the API shows them.
async fn wait_for_load_errors(http: &reqwest::Client, base: &str) -> Vec<String> {
    eventually("every stack failing to load", 30, async || {
        let body = get_json(http, &format!("{base}/api/v1/stacks")).await?;
        let errors: Vec<String> = body["stacks"]
            .as_array()?
            .iter()
            .filter_map(|s| s["lastError"].as_str().map(str::to_string))
            .collect();
        (errors.len() == 3).then_some(errors)
    })
    .await
}

/// Errors without the values still help: each names its file and the variable.
fn assert_still_useful(errors: &[String]) {
    for expected in [
        "stacks/vault/.env:1:0: invalid env file: unterminated quoted value of \"API_KEY\"",
        "stacks/interp/.env:2:0: invalid env file: unterminated \"${\" in the value of \"TOKEN\"",
        "stacks/counter/compose.yaml:5:17: services.app.deploy.replicas: expected an integer, got \"<secret TOKEN>\"",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\nnot in {errors:#?}"
        );
    }
}

/// Every file under `dir` (the Git mirrors): credentials must not be stored.
/// Git objects are compressed, so the repository's own secret files do not show.
fn collect_files(dir: &Path, surfaces: &mut Surfaces) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, surfaces);
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            surfaces.add(format!("file {}", path.display()), text);
        }
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// The page, every stack page, every JSON route, metrics and health.
async fn collect_http(http: &reqwest::Client, base: &str, surfaces: &mut Surfaces) {
    let mut routes: Vec<String> = [
        "/",
        "/?refresh=off",
        "/api/v1/repositories",
        "/api/v1/stacks",
        "/metrics",
        "/healthz",
        "/readyz",
        "/stacks/none/none",
        "/api/v1/stacks/none/none",
        "/no/such/route",
    ]
    .map(String::from)
    .to_vec();
    let stacks = get_json(http, &format!("{base}/api/v1/stacks"))
        .await
        .expect("the stack list");
    for stack in stacks["stacks"].as_array().unwrap() {
        let (namespace, name) = (
            stack["namespace"].as_str().unwrap(),
            stack["name"].as_str().unwrap(),
        );
        routes.push(format!("/stacks/{namespace}/{name}"));
        routes.push(format!("/api/v1/stacks/{namespace}/{name}"));
    }
    for route in routes {
        let response = http.get(format!("{base}{route}")).send().await.unwrap();
        let headers = format!("{:?}", response.headers());
        let text = response.text().await.unwrap();
        assert!(!text.is_empty(), "GET {route} answered nothing");
        surfaces.add(format!("GET {route}"), format!("{headers}\n{text}"));
    }
}

/// Kinds read on a real cluster, where listing everything is not an option.
const KINDS: &[(&str, &str, &str)] = &[
    ("", "v1", "Secret"),
    ("", "v1", "ConfigMap"),
    ("", "v1", "Service"),
    ("", "v1", "Event"),
    ("", "v1", "PersistentVolumeClaim"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("apps", "v1", "DaemonSet"),
    ("batch", "v1", "Job"),
    ("networking.k8s.io", "v1", "Ingress"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("events.k8s.io", "v1", "Event"),
    ("stackd.dev", "v1alpha1", "Stack"),
];

/// Adds every object to `surfaces`, the data of Secrets excepted, and returns that data.
async fn collect_objects(
    cluster: &TestCluster,
    namespaces: &[String],
    surfaces: &mut Surfaces,
) -> String {
    let objects = match &cluster.fake {
        Some(fake) => fake.objects(),
        None => {
            let mut objects = Vec::new();
            for (group, version, kind) in KINDS {
                objects.extend(list(cluster, namespaces, group, version, kind).await);
            }
            for namespace in namespaces {
                let api: Api<DynamicObject> =
                    Api::all_with(cluster.client.clone(), &namespace_resource());
                if let Ok(object) = api.get(namespace).await {
                    objects.push(serde_json::to_value(object).unwrap());
                }
            }
            objects
        }
    };
    let mut secret_data = String::new();
    for mut object in objects {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        if kind == "Secret" && object["apiVersion"] == "v1" {
            for field in ["data", "stringData"] {
                if let Some(data) = object.as_object_mut().and_then(|o| o.remove(field)) {
                    secret_data.push_str(&data.to_string());
                }
            }
        }
        let place = format!(
            "object {kind} {}/{}",
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap_or("")
        );
        surfaces.add(place, object.to_string());
    }
    secret_data
}

fn namespace_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"))
}

/// Objects of one kind in `namespaces`, as JSON.
async fn list(
    cluster: &TestCluster,
    namespaces: &[String],
    group: &str,
    version: &str,
    kind: &str,
) -> Vec<Value> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let mut objects = Vec::new();
    for namespace in namespaces {
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client.clone(), namespace, &resource);
        if let Ok(list) = api.list(&ListParams::default()).await {
            objects.extend(list.items.into_iter().map(|o| {
                let mut value = serde_json::to_value(o).unwrap();
                value["apiVersion"] = json!(resource.api_version);
                value["kind"] = json!(kind);
                value
            }));
        }
    }
    objects
}

/// On a real cluster: removes this run's namespaces (and with them every object).
async fn cleanup(cluster: &TestCluster, namespaces: &[String]) {
    let api: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &namespace_resource());
    for namespace in namespaces {
        let _ = api.delete(namespace, &DeleteParams::default()).await;
    }
}

/// One request the mock forge and webhook server received.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: axum::http::HeaderMap,
    body: String,
}

/// A mock Gitea that refuses the token (401), and a webhook and Slack
/// endpoint that accept everything; it records what it received.
struct Forge {
    url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Forge {
    async fn start() -> Forge {
        let received: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let recorded = received.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
                let recorded = recorded.clone();
                async move {
                    let path = uri.path().to_string();
                    let refused = path.starts_with("/api/v1/");
                    recorded.lock().unwrap().push(Received {
                        path,
                        headers,
                        body,
                    });
                    if refused {
                        axum::http::StatusCode::UNAUTHORIZED
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Forge { url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// The broken commit's failures reached the webhook.
async fn wait_for_notifications(forge: &Forge) -> Vec<Received> {
    eventually("the load failures as notifications", 30, async || {
        let received = forge.received();
        let failures = received
            .iter()
            .filter(|r| r.path.starts_with("/hooks/") && r.body.contains("LoadFailed"))
            .count();
        (failures >= 3).then_some(received)
    })
    .await
}

/// Positive controls: the token, the URLs and the signature reached the mock
/// (so the same search would find them if they leaked).
fn assert_forge_saw_the_secrets(received: &[Received], scenario: &Scenario) {
    let header = |r: &Received, name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let statuses: Vec<&Received> = received
        .iter()
        .filter(|r| r.path.starts_with("/api/v1/repos/team/apps/statuses/"))
        .collect();
    assert!(
        !statuses.is_empty(),
        "no commit status posted: {received:?}"
    );
    let expected = format!("token {}", scenario.forge_token.value);
    assert!(
        statuses
            .iter()
            .all(|r| header(r, "authorization") == expected)
    );
    let hooks: Vec<&Received> = received
        .iter()
        .filter(|r| r.path.starts_with("/hooks/"))
        .collect();
    assert!(
        hooks
            .iter()
            .all(|r| r.path == format!("/hooks/{}", scenario.hook_url.value)),
        "{hooks:?}"
    );
    for hook in &hooks {
        assert_eq!(
            header(hook, "x-stackd-signature-256"),
            sign_sha256(scenario.hook_secret.value.as_bytes(), hook.body.as_bytes())
        );
    }
    assert!(
        received
            .iter()
            .any(|r| r.path.starts_with("/slack/") && r.body.contains("failed")),
        "no Slack message: {received:?}"
    );
}
