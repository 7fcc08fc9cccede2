//! Only signed commits (issue 14 part 2): real commits signed by real `git`
//! with keys made at test time by `ssh-keygen` and `gpg --batch
//! --quick-gen-key`, polled with `verify:`. The poll-level cases cover each
//! kind of refusal; the last test runs `stackd run` against the in-process API
//! server (or the cluster named by `KUBECONFIG_E2E`) and checks every surface
//! of a refusal: the Stack's condition, its Event, the metric, the API and page.

mod common;
#[path = "fake_api/mod.rs"]
mod fake_api;
#[path = "git_support/mod.rs"]
mod git_support;
#[path = "live_support/mod.rs"]
mod live_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use stackd::git::poll::poll_repository;
use stackd::git::verify::Verify;
use stackd::git::{GitError, RepoSettings};

use git_support::Upstream;
use live_support::{Live, eventually, ready_reason};

/// `ssh-keygen` and `gpg`: under CI a missing one fails the test; elsewhere
/// the test is skipped with a visible note (scripts/setup-signing.sh installs them).
fn signing_tools() -> bool {
    for tool in ["ssh-keygen", "gpg"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                !common::in_ci(),
                "{tool} not found; scripts/setup-signing.sh installs it"
            );
            eprintln!("SKIPPED: {tool} not found (scripts/setup-signing.sh installs it)");
            return false;
        }
    }
    true
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run a signing tool");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Keys made for one test, and the trust files that name them.
struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir(&gnupg).unwrap();
        // gpg warns about, and agents refuse, a home others can read.
        std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Keys { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new ed25519 key; returns the private key's path (`.pub` beside it).
    fn ssh_key(&self, name: &str) -> PathBuf {
        let key = self.path(name);
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key));
        key
    }

    /// An allowed-signers file: one line per (principal, options, key).
    fn allowed_signers(&self, entries: &[(&str, &str, &Path)]) -> PathBuf {
        let mut text = String::from("# principals [options] key\n");
        for (principal, options, key) in entries {
            let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
            text.push_str(&format!("{principal} {options} {}\n", public.trim()));
        }
        let file = self.path("allowed_signers");
        std::fs::write(&file, text).unwrap();
        file
    }

    fn gpg(&self) -> Command {
        let mut command = Command::new("gpg");
        command.env("GNUPGHOME", self.path("gnupg")).args([
            "--batch",
            "--quiet",
            "--passphrase",
            "",
        ]);
        command
    }

    /// A new ed25519 signing key valid for `expire` (`never`, `1d`), made at
    /// `faked_time` if given; returns its fingerprint.
    fn gpg_key(&self, uid: &str, expire: &str, faked_time: Option<&str>) -> String {
        let mut command = self.gpg();
        if let Some(time) = faked_time {
            command.args(["--faked-system-time", time]);
        }
        run(command.args(["--quick-gen-key", uid, "ed25519", "sign", expire]));
        let listing = run(self.gpg().args(["--with-colons", "--list-keys", uid]));
        listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_string())
            .expect("the new key's fingerprint")
    }

    /// Adds a signing subkey to `primary`; returns the subkey's fingerprint.
    fn gpg_signing_subkey(&self, primary: &str) -> String {
        run(self
            .gpg()
            .args(["--quick-add-key", primary, "ed25519", "sign", "never"]));
        let listing = run(self.gpg().args(["--with-colons", "--list-keys", primary]));
        let mut after_sub = false;
        let mut subkey = None;
        for line in listing.lines() {
            if line.starts_with("sub:") {
                after_sub = true;
            } else if let Some(rest) = line.strip_prefix("fpr:")
                && after_sub
            {
                subkey = Some(rest.trim_matches(':').to_string());
                after_sub = false;
            }
        }
        subkey.expect("the new subkey's fingerprint")
    }

    /// `gpg --export` of `fingerprints`, armored or binary.
    fn keyring(&self, fingerprints: &[&str], armor: bool) -> PathBuf {
        let file = self.path(if armor { "keyring.asc" } else { "keyring.gpg" });
        let mut command = self.gpg();
        if armor {
            command.arg("--armor");
        }
        command
            .arg("--yes")
            .arg("--output")
            .arg(&file)
            .arg("--export");
        run(command.args(fingerprints));
        file
    }

    /// A `gpg.program` that signs as if it were `time`.
    fn gpg_at(&self, time: &str) -> PathBuf {
        let script = self.path(&format!("gpg-at-{time}"));
        std::fs::write(
            &script,
            format!("#!/bin/sh\nexec gpg --faked-system-time {time} \"$@\"\n"),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        script
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // The agent gpg started for this GNUPGHOME.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.path("gnupg"))
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

/// How a commit is signed.
enum Sign<'a> {
    Unsigned,
    Ssh(&'a Path),
    /// A fingerprint, and a `gpg.program` (e.g. one with a faked time).
    Gpg(&'a Keys, &'a str, Option<&'a Path>),
}

/// Commits everything in `upstream` with real `git commit -S` (or unsigned).
fn commit(upstream: &Upstream, sign: &Sign<'_>, message: &str) -> String {
    upstream.git(&["add", "-A"]);
    let mut command = Command::new("git");
    command
        .current_dir(&upstream.dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", &upstream.dir);
    match sign {
        Sign::Unsigned => {
            command.args(["commit", "--no-gpg-sign"]);
        }
        Sign::Ssh(key) => {
            command
                .args(["-c", "gpg.format=ssh", "-c"])
                .arg(format!("user.signingkey={}", key.display()))
                .args(["commit", "-S"]);
        }
        Sign::Gpg(keys, fingerprint, program) => {
            command
                .env("GNUPGHOME", keys.path("gnupg"))
                .args(["-c", "gpg.format=openpgp", "-c"])
                .arg(format!("user.signingkey={fingerprint}"));
            if let Some(program) = program {
                command
                    .arg("-c")
                    .arg(format!("gpg.program={}", program.display()));
            }
            command.args(["commit", "-S"]);
        }
    }
    run(command.args(["-q", "--allow-empty", "-m", message]));
    upstream.head()
}

const WEB: &str = "services:\n  web:\n    image: nginx:1.27\n";

fn settings(upstream: &Upstream, verify: Verify) -> RepoSettings {
    let mut settings = RepoSettings::new("apps", upstream.file_url(), "main");
    settings.verify = Some(verify);
    settings
}

fn ssh_trust(file: PathBuf) -> Verify {
    Verify {
        ssh_allowed_signers: Some(file),
        gpg_keyring: None,
    }
}

fn gpg_trust(file: PathBuf) -> Verify {
    Verify {
        ssh_allowed_signers: None,
        gpg_keyring: Some(file),
    }
}

/// The refusal of a poll: (commit, signer, reason).
fn refused(result: Result<stackd::git::poll::PollOutcome, GitError>) -> (String, String, String) {
    match result {
        Err(error @ GitError::Unverified { .. }) => {
            assert_eq!(error.label(), "unverified");
            let text = error.to_string();
            assert!(text.contains("VerificationFailed"), "{text}");
            let GitError::Unverified {
                commit,
                signer,
                reason,
                ..
            } = error
            else {
                unreachable!()
            };
            (commit, signer, reason)
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(outcome) => panic!("applied {}", outcome.commit),
    }
}

fn ssh_fingerprint(key: &Path) -> String {
    let out = run(Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(key.with_extension("pub")));
    out.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn a_commit_signed_by_a_trusted_ssh_key_is_applied_and_others_are_refused() {
    if !signing_tools() {
        return;
    }
    let keys = Keys::new();
    let trusted = keys.ssh_key("trusted");
    let stranger = keys.ssh_key("stranger");
    let mut signers = keys.allowed_signers(&[("alice@example.com", "", &trusted)]);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let upstream = Upstream::new(tmp.path(), "apps");
    upstream.write("web/compose.yaml", WEB);
    let good = commit(&upstream, &Sign::Ssh(&trusted), "signed");

    // Trusted: applied, with the stacks discovered from the verified tree.
    let outcome = poll_repository(
        &settings(&upstream, ssh_trust(signers.clone())),
        &data,
        None,
    )
    .expect("a trusted SSH signature is applied");
    assert_eq!(outcome.commit.to_string(), good);
    let stacks: Vec<String> = outcome
        .stacks
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(stacks, ["web"]);

    // Unsigned: refused, and says so.
    let unsigned = commit(&upstream, &Sign::Unsigned, "unsigned");
    let (commit_id, signer, reason) = refused(poll_repository(
        &settings(&upstream, ssh_trust(signers.clone())),
        &data,
        Some(outcome.commit),
    ));
    assert_eq!(
        (commit_id.as_str(), signer.as_str()),
        (unsigned.as_str(), "unsigned")
    );
    assert_eq!(reason, "the commit is not signed");

    // Signed by a key the file does not list: refused, naming that key.
    let other = commit(&upstream, &Sign::Ssh(&stranger), "a stranger");
    let (commit_id, signer, reason) = refused(poll_repository(
        &settings(&upstream, ssh_trust(signers.clone())),
        &data,
        Some(outcome.commit),
    ));
    assert_eq!(commit_id, other);
    assert_eq!(signer, ssh_fingerprint(&stranger));
    assert!(reason.contains("unknown signer"), "{reason}");

    // The file is read again at each poll: listing the key trusts it...
    signers = keys.allowed_signers(&[
        ("alice@example.com", "", &trusted),
        ("bob@example.com", "namespaces=\"git\"", &stranger),
    ]);
    let outcome = poll_repository(
        &settings(&upstream, ssh_trust(signers.clone())),
        &data,
        None,
    )
    .expect("the stranger is now trusted");
    assert_eq!(outcome.commit.to_string(), other);
    // ...for the `git` namespace only, and only in its validity window.
    keys.allowed_signers(&[("bob@example.com", "namespaces=\"file\"", &stranger)]);
    let (_, _, reason) = refused(poll_repository(
        &settings(&upstream, ssh_trust(signers.clone())),
        &data,
        None,
    ));
    assert!(reason.contains("namespace"), "{reason}");
    keys.allowed_signers(&[("bob@example.com", "valid-before=\"20200101\"", &stranger)]);
    let (_, _, reason) = refused(poll_repository(
        &settings(&upstream, ssh_trust(signers.clone())),
        &data,
        None,
    ));
    assert!(
        reason.contains("not valid at the commit's time"),
        "{reason}"
    );

    // An SSH signature with only a GPG keyring configured: refused.
    let (_, signer, reason) = refused(poll_repository(
        &settings(&upstream, gpg_trust(keys.path("no-keyring"))),
        &data,
        None,
    ));
    assert_eq!(signer, ssh_fingerprint(&stranger));
    assert!(reason.contains("no sshAllowedSigners"), "{reason}");
    // A missing trust file is named, and refuses.
    std::fs::remove_file(&signers).unwrap();
    let (_, _, reason) = refused(poll_repository(
        &settings(&upstream, ssh_trust(signers.clone())),
        &data,
        None,
    ));
    assert!(
        reason.contains("cannot read sshAllowedSigners file"),
        "{reason}"
    );
}

#[test]
fn a_commit_signed_by_a_trusted_gpg_key_is_applied_expired_and_revoked_keys_are_refused() {
    if !signing_tools() {
        return;
    }
    let keys = Keys::new();
    let alice = keys.gpg_key("Alice <alice@example.com>", "never", None);
    // Made in 2020, valid for a day: expired long ago.
    let old = keys.gpg_key("Old <old@example.com>", "1d", Some("20200101T000000"));
    let stranger = keys.gpg_key("Mallory <mallory@example.com>", "never", None);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let upstream = Upstream::new(tmp.path(), "apps");
    upstream.write("web/compose.yaml", WEB);

    // Trusted, from an armored keyring and from a binary one.
    let good = commit(&upstream, &Sign::Gpg(&keys, &alice, None), "signed");
    for armor in [true, false] {
        let keyring = keys.keyring(&[&alice, &old], armor);
        let outcome = poll_repository(&settings(&upstream, gpg_trust(keyring)), &data, None)
            .expect("a trusted OpenPGP signature is applied");
        assert_eq!(outcome.commit.to_string(), good);
    }
    // A signing subkey signs by default once it exists: trusted through its primary.
    let carol = keys.gpg_key("Carol <carol@example.com>", "never", None);
    let carol_subkey = keys.gpg_signing_subkey(&carol);
    let by_subkey = commit(&upstream, &Sign::Gpg(&keys, &carol, None), "carol's subkey");
    let (_, signer, _) = refused(poll_repository(
        &settings(&upstream, gpg_trust(keys.keyring(&[&alice], true))),
        &data,
        None,
    ));
    assert_eq!(signer, carol_subkey);
    let keyring = keys.keyring(&[&alice, &old, &carol], true);
    let outcome = poll_repository(
        &settings(&upstream, gpg_trust(keyring.clone())),
        &data,
        None,
    )
    .expect("a trusted key's signing subkey is trusted");
    assert_eq!(outcome.commit.to_string(), by_subkey);

    // Signed by a key not in the keyring.
    let other = commit(&upstream, &Sign::Gpg(&keys, &stranger, None), "mallory");
    let (commit_id, signer, reason) = refused(poll_repository(
        &settings(&upstream, gpg_trust(keyring.clone())),
        &data,
        None,
    ));
    assert_eq!(commit_id, other);
    assert_eq!(signer, stranger);
    assert!(reason.contains("unknown signer"), "{reason}");

    // Signed by the expired key, while it was valid (gpg signs as of 2020-01-01 12:00).
    let at_2020 = keys.gpg_at("20200101T120000");
    let expired = commit(
        &upstream,
        &Sign::Gpg(&keys, &old, Some(&at_2020)),
        "expired key",
    );
    let (commit_id, signer, reason) = refused(poll_repository(
        &settings(&upstream, gpg_trust(keyring.clone())),
        &data,
        None,
    ));
    assert_eq!((commit_id, signer), (expired, old.clone()));
    assert!(reason.contains("expired at 2020-01-02"), "{reason}");

    // A revoked key: gpg's own revocation certificate, imported.
    upstream.write("web/compose.yaml", &WEB.replace("1.27", "1.28"));
    let by_alice = commit(&upstream, &Sign::Gpg(&keys, &alice, None), "alice again");
    poll_repository(
        &settings(&upstream, gpg_trust(keyring.clone())),
        &data,
        None,
    )
    .expect("alice is trusted before the revocation");
    let certificate = std::fs::read_to_string(
        keys.path("gnupg")
            .join("openpgp-revocs.d")
            .join(format!("{alice}.rev")),
    )
    .unwrap();
    // gpg writes it with a ':' before the armor line against accidental imports.
    let revocation = keys.path("revocation.asc");
    std::fs::write(
        &revocation,
        certificate.replace(":-----BEGIN", "-----BEGIN"),
    )
    .unwrap();
    run(keys.gpg().arg("--import").arg(&revocation));
    let keyring = keys.keyring(&[&alice, &old], true);
    let (commit_id, signer, reason) = refused(poll_repository(
        &settings(&upstream, gpg_trust(keyring)),
        &data,
        None,
    ));
    assert_eq!((commit_id, signer), (by_alice, alice));
    assert_eq!(reason, "the OpenPGP key is revoked");
}

/// The commit object of `signed` with its `gpgsig` header moved onto the
/// (unsigned) commit `target`: a signature copied from another commit.
fn copy_signature(upstream: &Upstream, signed: &str, target: &str) -> String {
    let signed_raw = upstream.git(&["cat-file", "commit", signed]);
    let target_raw = upstream.git(&["cat-file", "commit", target]);
    let (headers, _) = signed_raw.split_once("\n\n").unwrap();
    let start = headers.find("\ngpgsig ").unwrap() + 1;
    let gpgsig = &headers[start..];
    let (target_headers, message) = target_raw.split_once("\n\n").unwrap();
    let forged = format!("{target_headers}\n{gpgsig}\n\n{message}\n");
    let file = upstream.dir.join("forged-commit");
    std::fs::write(&file, forged).unwrap();
    let id = upstream.git(&["hash-object", "-t", "commit", "-w", "forged-commit"]);
    std::fs::remove_file(&file).unwrap();
    upstream.git(&["update-ref", "refs/heads/main", &id]);
    id
}

#[test]
fn a_signature_copied_from_another_commit_is_refused() {
    if !signing_tools() {
        return;
    }
    let keys = Keys::new();
    let trusted = keys.ssh_key("trusted");
    let signers = keys.allowed_signers(&[("alice@example.com", "", &trusted)]);
    let alice = keys.gpg_key("Alice <alice@example.com>", "never", None);
    let keyring = keys.keyring(&[&alice], true);
    let both = Verify {
        ssh_allowed_signers: Some(signers),
        gpg_keyring: Some(keyring),
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let upstream = Upstream::new(tmp.path(), "apps");
    upstream.write("web/compose.yaml", WEB);
    let ssh_signed = commit(&upstream, &Sign::Ssh(&trusted), "signed by ssh");
    let gpg_signed = commit(&upstream, &Sign::Gpg(&keys, &alice, None), "signed by gpg");
    let first = poll_repository(&settings(&upstream, both.clone()), &data, None).unwrap();
    assert_eq!(first.commit.to_string(), gpg_signed);

    for (signed, fingerprint) in [
        (&ssh_signed, ssh_fingerprint(&trusted)),
        (&gpg_signed, alice.clone()),
    ] {
        upstream.write("web/compose.yaml", "services:\n  web:\n    image: evil:1\n");
        let unsigned = commit(&upstream, &Sign::Unsigned, "an attacker's change");
        let forged = copy_signature(&upstream, signed, &unsigned);
        assert_ne!(&forged, signed);
        let (commit_id, signer, reason) = refused(poll_repository(
            &settings(&upstream, both.clone()),
            &data,
            Some(first.commit),
        ));
        assert_eq!((commit_id, signer), (forged, fingerprint));
        assert!(reason.starts_with("bad signature"), "{reason}");
    }
}

fn deployment_image(live: &Live, namespace: &str) -> impl Future<Output = Option<String>> {
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(live.cluster.client.clone(), namespace);
    async move {
        let deployment = api.get_opt("web").await.ok()??;
        deployment
            .spec?
            .template
            .spec?
            .containers
            .first()?
            .image
            .clone()
    }
}

/// A force-push of an unsigned commit over a signed one, with `stackd run`:
/// refused, the objects of the signed commit stay, and the Stack, its Event,
/// the metric, the API and the page all say `SourceVerificationFailed`. A signed
/// commit then applies again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_pushed_unsigned_commit_is_refused_everywhere_and_the_old_objects_stay() {
    if !signing_tools() {
        return;
    }
    let keys = Keys::new();
    let trusted = keys.ssh_key("trusted");
    let signers = keys.allowed_signers(&[("alice@example.com", "", &trusted)]);
    let extra = format!("    verify: {{sshAllowedSigners: {}}}\n", signers.display());
    let live = Live::start_with(
        &[("stacks/{run}-web/compose.yaml", WEB)],
        &[],
        &extra,
        |upstream| {
            commit(upstream, &Sign::Ssh(&trusted), "signed");
        },
    )
    .await;
    let first = live.upstream.head();
    let name = live.stack("web");
    eventually(&format!("{name} applied"), 90, async || {
        let stack = live.stack_object(&name).await?;
        (stack.status?.last_applied_revision.as_deref() == Some(first.as_str())).then_some(())
    })
    .await;
    eventually("web to run nginx:1.27", 60, async || {
        (deployment_image(&live, &name).await.as_deref() == Some("nginx:1.27")).then_some(())
    })
    .await;

    // Rewrite the signed commit with an unsigned one that changes the image.
    live.write(
        "stacks/{run}-web/compose.yaml",
        &WEB.replace("1.27", "1.28"),
    );
    live.upstream.git(&["add", "-A"]);
    live.upstream.git(&[
        "commit",
        "-q",
        "--amend",
        "--no-gpg-sign",
        "-m",
        "unsigned rewrite",
    ]);
    let bad = live.upstream.head();
    assert_ne!(bad, first);

    // The Stack: Ready=False, SourceVerificationFailed, still at the signed commit.
    let stack = eventually(
        &format!("{name} to say SourceVerificationFailed"),
        60,
        async || {
            let stack = live.stack_object(&name).await?;
            (ready_reason(&stack).as_deref() == Some("SourceVerificationFailed")).then_some(stack)
        },
    )
    .await;
    let status = stack.status.clone().unwrap();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    // Only a new commit (or trust) can fix it.
    let stalled = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Stalled")
        .unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "SourceVerificationFailed")
    );
    assert!(ready.message.contains(&bad), "{}", ready.message);
    assert!(
        ready.message.contains("signer unsigned"),
        "{}",
        ready.message
    );
    assert_eq!(
        status.last_applied_revision.as_deref(),
        Some(first.as_str())
    );
    assert_eq!(
        status.last_attempted_revision.as_deref(),
        Some(bad.as_str())
    );
    assert_eq!(
        stack.spec.source.as_ref().map(|s| s.revision.as_str()),
        Some(first.as_str())
    );
    // The old objects stay.
    assert_eq!(
        deployment_image(&live, &name).await.as_deref(),
        Some("nginx:1.27")
    );

    // One Warning Event named after the reason.
    let events = eventually(&format!("{name}'s Warning"), 30, async || {
        let events = live.events(&name).await;
        events
            .iter()
            .any(|(kind, reason, _)| kind == "Warning" && reason == "SourceVerificationFailed")
            .then_some(events)
    })
    .await;
    let warning = events
        .iter()
        .find(|(_, reason, _)| reason == "SourceVerificationFailed")
        .unwrap();
    assert!(warning.2.contains("VerificationFailed"), "{events:?}");

    // The metric, the repository in the API and on the page, the Stack in the API.
    let metrics = eventually("the unverified poll in /metrics", 30, async || {
        let metrics = live.text("/metrics").await?;
        metrics
            .contains("stackd_git_poll_total{repository=\"apps\",result=\"unverified\"}")
            .then_some(metrics)
    })
    .await;
    let ready_series = format!(
        "stackd_stack_ready{{namespace=\"{name}\",reason=\"SourceVerificationFailed\",stack=\"{name}\"}} 1"
    );
    assert!(metrics.contains(&ready_series), "{metrics}");
    let repositories = live.json("/api/v1/repositories").await.unwrap();
    let text = repositories.to_string();
    assert!(text.contains("\"unverified\""), "{text}");
    assert!(
        text.contains(&format!(
            "VerificationFailed: commit {bad} (signer unsigned)"
        )),
        "{text}"
    );
    let api = eventually(&format!("{name} in /api/v1/stacks"), 30, async || {
        let view = live.api_stack(&name).await?;
        (view["reason"] == "SourceVerificationFailed").then_some(view)
    })
    .await;
    assert_eq!(api["phase"], "Failure", "{api}");
    let page = live.text("/").await.unwrap();
    assert!(
        page.contains(&format!("VerificationFailed: commit {bad}")),
        "{page}"
    );

    // A signed commit on top: applied, and the Stack recovers.
    live.write(
        "stacks/{run}-web/compose.yaml",
        &WEB.replace("1.27", "1.29"),
    );
    let fixed = commit(&live.upstream, &Sign::Ssh(&trusted), "signed again");
    eventually("web to run nginx:1.29", 90, async || {
        (deployment_image(&live, &name).await.as_deref() == Some("nginx:1.29")).then_some(())
    })
    .await;
    let stack = eventually(&format!("{name} to recover"), 60, async || {
        let stack = live.stack_object(&name).await?;
        (ready_reason(&stack).as_deref() != Some("SourceVerificationFailed")
            && stack.status.as_ref()?.last_applied_revision.as_deref() == Some(fixed.as_str()))
        .then_some(stack)
    })
    .await;
    assert_ne!(
        ready_reason(&stack).as_deref(),
        Some("SourceVerificationFailed")
    );
}

/// Verification comes before any tree of the commit is read: an unsigned
/// commit whose tree would fail discovery (two stacks named `web`) is refused
/// for its signature, where the same poll without `verify:` reads the tree and
/// fails on it.
#[test]
fn an_unverified_commit_s_tree_is_never_read() {
    if !signing_tools() {
        return;
    }
    let keys = Keys::new();
    let trusted = keys.ssh_key("trusted");
    let signers = keys.allowed_signers(&[("alice@example.com", "", &trusted)]);
    let tmp = tempfile::tempdir().unwrap();
    let upstream = Upstream::new(tmp.path(), "apps");
    upstream.write("a/web/compose.yaml", WEB);
    upstream.write("b/web/compose.yaml", WEB);
    let unsigned = commit(&upstream, &Sign::Unsigned, "two stacks named web");

    let unverified = RepoSettings::new("apps", upstream.file_url(), "main");
    let read = poll_repository(&unverified, &tmp.path().join("plain"), None);
    assert!(
        matches!(&read, Err(GitError::Discovery { .. })),
        "without verify: the tree is read and fails: {:?}",
        read.err()
    );
    let (commit_id, signer, _) = refused(poll_repository(
        &settings(&upstream, ssh_trust(signers)),
        &tmp.path().join("verified"),
        None,
    ));
    assert_eq!((commit_id, signer.as_str()), (unsigned, "unsigned"));
}
