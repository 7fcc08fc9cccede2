//! The daemon's configuration file: repositories to follow, per-stack settings,
//! and the HTTP surface. Every setting is validated when loaded, with an error
//! that names the key (`repositories[0].interval: ...`).
//!
//! A repository entry holds the Git source's own settings
//! ([`RepoSettings`](crate::git::settings::RepoSettings)) plus the daemon's keys
//! (`prune`, `allowEmpty`, `suspend`, `variables`, `stacks`), split off before the
//! rest is handed to the source.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::git::settings::RepoSettings;
use crate::render::{PodSecurity, PublishedServiceType};

/// The whole configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub repositories: Vec<RepositoryConfig>,
    pub settings: DaemonSettings,
}

/// Daemon-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DaemonSettings {
    /// Bearer token file for `POST /api/v1/repositories/{name}/sync`; unset turns it off.
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
    /// Default Service type for published ports.
    #[serde(default)]
    pub published_service_type: ServiceTypeSetting,
    /// Allow bind mounts of host paths (hostPath volumes). Off: a GitOps
    /// controller should not reach into nodes unless the operator says so.
    #[serde(default)]
    pub allow_host_path: bool,
    // Commit statuses and notifications (src/notify).
    /// Where the status page is reachable; links in statuses and notifications.
    #[serde(default)]
    pub external_url: Option<String>,
    #[serde(default)]
    pub notifications: Vec<crate::notify::webhook::NotificationConfig>,
    /// Tenancy: the ServiceAccount every repository without its own
    /// `serviceAccountName` impersonates when writing a stack's objects.
    #[serde(default)]
    pub default_service_account_name: Option<String>,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            api_token_file: None,
            published_service_type: ServiceTypeSetting::LoadBalancer,
            allow_host_path: false,
            external_url: None,
            notifications: Vec::new(),
            default_service_account_name: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum ServiceTypeSetting {
    #[default]
    LoadBalancer,
    NodePort,
    ClusterIP,
}

impl From<ServiceTypeSetting> for PublishedServiceType {
    fn from(value: ServiceTypeSetting) -> Self {
        match value {
            ServiceTypeSetting::LoadBalancer => PublishedServiceType::LoadBalancer,
            ServiceTypeSetting::NodePort => PublishedServiceType::NodePort,
            ServiceTypeSetting::ClusterIP => PublishedServiceType::ClusterIP,
        }
    }
}

/// One repository: where it is, and what the daemon may do with its stacks.
#[derive(Clone, Debug, PartialEq)]
pub struct RepositoryConfig {
    pub source: RepoSettings,
    pub policy: RepositoryPolicy,
}

/// The daemon's keys of a repository entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RepositoryPolicy {
    /// Delete objects (and Stacks) that are no longer in Git.
    #[serde(default = "yes")]
    pub prune: bool,
    /// Allow pruning a stack down to zero objects, or deleting a Stack whose
    /// directory vanished. Off by default: an empty render is more often a mistake.
    #[serde(default)]
    pub allow_empty: bool,
    /// Stop reconciling every stack of this repository.
    #[serde(default)]
    pub suspend: bool,
    /// Interpolation variables for every stack of this repository (override `.env`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Per-stack settings, by stack name.
    #[serde(default)]
    pub stacks: BTreeMap<String, StackSettings>,
    /// Post each stack's outcome as a commit status on the forge (src/notify).
    #[serde(default)]
    pub commit_status: Option<crate::notify::forge::CommitStatusConfig>,
    // Tenancy: what the repository's stacks may do (README "What a repository may do").
    /// Existing namespaces stackd did not create that stacks may use (globs);
    /// `kube-*`, `default` and stackd's own only when listed by exact name.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Pod Security level of every stack (default `baseline`).
    #[serde(default)]
    pub pod_security: Option<PodSecurity>,
    /// Render compose networks as NetworkPolicies (default true).
    #[serde(default)]
    pub network_policies: Option<bool>,
    /// Write the stacks' objects impersonating this ServiceAccount of each stack's namespace.
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// How long a new revision may take to become Ready (default `5m`; README "Safe rollouts").
    #[serde(default, deserialize_with = "health_timeout")]
    pub health_timeout: Option<String>,
    /// Re-apply the last healthy revision when a new one misses its deadline (default false).
    #[serde(default)]
    pub rollback: Option<bool>,
}

/// Settings of one stack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StackSettings {
    /// Namespace to render into (default: the stack name).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Variables for this stack; they override the repository's.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Compose profiles to enable.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Images for services that only have `build:`, by service name.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    #[serde(default)]
    pub suspend: bool,
    /// Pod Security level of this stack; overrides the repository's.
    #[serde(default)]
    pub pod_security: Option<PodSecurity>,
    /// NetworkPolicies for this stack; overrides the repository's.
    #[serde(default)]
    pub network_policies: Option<bool>,
    /// This stack's health deadline; overrides the repository's.
    #[serde(default, deserialize_with = "health_timeout")]
    pub health_timeout: Option<String>,
    /// Rollback for this stack; overrides the repository's.
    #[serde(default)]
    pub rollback: Option<bool>,
}

/// A `healthTimeout` that parses (`90s`, `5m`), kept as written for the Stack.
fn health_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    match crate::git::settings::parse_duration(&text) {
        Some(_) => Ok(Some(text)),
        None => Err(serde::de::Error::custom(format!(
            "invalid healthTimeout {text:?}: expected e.g. \"90s\", \"5m\""
        ))),
    }
}

fn yes() -> bool {
    true
}

/// The policy keys, split off a repository entry before the source settings are read.
const POLICY_KEYS: &[&str] = &[
    "prune",
    "allowEmpty",
    "suspend",
    "variables",
    "stacks",
    "commitStatus",
    "namespaces",
    "podSecurity",
    "networkPolicies",
    "healthTimeout",
    "rollback",
    "serviceAccountName",
];

/// Why a configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {message}")]
    Read { file: PathBuf, message: String },
    #[error("{file}: invalid YAML: {message}")]
    Yaml { file: PathBuf, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Yaml { .. } => "yaml",
            ConfigError::Invalid { .. } => "invalid",
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Read {
            file: file.to_path_buf(),
            message: e.to_string(),
        })?;
        Config::parse(&text, file)
    }

    /// Parses and validates configuration text; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key,
            message,
        };
        let document: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            // YAML 1.2 booleans, as in compose files: `y` and `on` stay strings.
            let options = serde_saphyr::options! { strict_booleans: true };
            serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::Yaml {
                file: file.to_path_buf(),
                message: e.to_string().lines().next().unwrap_or_default().to_string(),
            })?
        };
        let serde_json::Value::Object(mut top) = document else {
            return Err(invalid("(top level)".into(), "expected a mapping".into()));
        };
        let repositories = match top.remove("repositories") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items,
            Some(_) => return Err(invalid("repositories".into(), "expected a list".into())),
        };
        let settings: DaemonSettings = typed(serde_json::Value::Object(top), "")
            .map_err(|(key, message)| invalid(key, message))?;

        let mut parsed = Vec::new();
        for (index, entry) in repositories.into_iter().enumerate() {
            let prefix = format!("repositories[{index}]");
            let serde_json::Value::Object(mut fields) = entry else {
                return Err(invalid(prefix, "expected a mapping".into()));
            };
            let mut policy_fields = serde_json::Map::new();
            for key in POLICY_KEYS {
                if let Some(value) = fields.remove(*key) {
                    policy_fields.insert((*key).to_string(), value);
                }
            }
            let source: RepoSettings = typed(serde_json::Value::Object(fields), &prefix)
                .map_err(|(key, message)| invalid(key, message))?;
            let policy: RepositoryPolicy = typed(serde_json::Value::Object(policy_fields), &prefix)
                .map_err(|(key, message)| invalid(key, message))?;
            parsed.push(RepositoryConfig { source, policy });
        }
        let config = Config {
            repositories: parsed,
            settings,
        };
        config
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        Ok(config)
    }

    /// Checks what types alone cannot: unique names, valid globs, DNS names, files present.
    fn validate(&self) -> Result<(), (String, String)> {
        let mut names = BTreeSet::new();
        for (index, repository) in self.repositories.iter().enumerate() {
            let key = |field: &str| format!("repositories[{index}].{field}");
            let source = &repository.source;
            if !is_dns_label(&source.name) {
                return Err((
                    key("name"),
                    format!(
                        "{:?} is not a valid name (lower-case letters, digits and '-')",
                        source.name
                    ),
                ));
            }
            if !names.insert(source.name.clone()) {
                return Err((
                    key("name"),
                    format!("repository name {:?} is used twice", source.name),
                ));
            }
            if source.url.trim().is_empty() {
                return Err((key("url"), "must not be empty".into()));
            }
            if source.interval.is_zero() {
                return Err((key("interval"), "must be longer than zero".into()));
            }
            if source.timeout.is_zero() {
                return Err((key("timeout"), "must be longer than zero".into()));
            }
            for (i, pattern) in source.paths.iter().enumerate() {
                glob::Pattern::new(pattern).map_err(|e| {
                    (
                        key(&format!("paths[{i}]")),
                        format!("invalid glob {pattern:?}: {e}"),
                    )
                })?;
                // Such a glob would match nothing, silently.
                if pattern.trim().starts_with('/') || pattern.split('/').any(|part| part == "..") {
                    return Err((
                        key(&format!("paths[{i}]")),
                        format!(
                            "{pattern:?} is outside the repository: paths are relative to its root"
                        ),
                    ));
                }
            }
            if let Some(verify) = &source.verify {
                verify.check().map_err(|m| (key("verify"), m))?;
            }
            if let Some(file) = &source.webhook_secret_file {
                readable(file).map_err(|m| (key("webhookSecretFile"), m))?;
            }
            for (i, pattern) in repository.policy.namespaces.iter().enumerate() {
                glob::Pattern::new(pattern).map_err(|e| {
                    (
                        key(&format!("namespaces[{i}]")),
                        format!("invalid glob {pattern:?}: {e}"),
                    )
                })?;
            }
            if let Some(name) = &repository.policy.service_account_name {
                service_account(name).map_err(|m| (key("serviceAccountName"), m))?;
            }
            for (stack, settings) in &repository.policy.stacks {
                if let Some(namespace) = &settings.namespace
                    && !is_dns_label(namespace)
                {
                    return Err((
                        key(&format!("stacks.{stack}.namespace")),
                        format!("{namespace:?} is not a valid namespace name"),
                    ));
                }
            }
        }
        if let Some(name) = &self.settings.default_service_account_name {
            service_account(name).map_err(|m| ("defaultServiceAccountName".to_string(), m))?;
        }
        if let Some(file) = &self.settings.api_token_file {
            readable(file).map_err(|m| ("apiTokenFile".to_string(), m))?;
        }
        // commitStatus, externalUrl and notifications.
        crate::notify::Settings::of(self)?;
        Ok(())
    }
}

/// Deserialises `value`, reporting the failing key as a path below `prefix`.
fn typed<T: for<'de> Deserialize<'de>>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = match (prefix.is_empty(), path == ".") {
            (true, true) => "(top level)".to_string(),
            (true, false) => path,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{path}"),
        };
        (key, e.into_inner().to_string())
    })
}

/// A ServiceAccount name: a DNS-1123 subdomain.
fn service_account(name: &str) -> Result<(), String> {
    let valid = name.len() <= 253 && name.split('.').all(is_dns_label);
    match valid {
        true => Ok(()),
        false => Err(format!("{name:?} is not a valid ServiceAccount name")),
    }
}

fn readable(file: &Path) -> Result<(), String> {
    std::fs::metadata(file)
        .map(|_| ())
        .map_err(|e| format!("cannot read {}: {e}", file.display()))
}

/// A DNS-1123 label: what namespace and repository names must be.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("config.yaml"))
    }

    #[test]
    fn full_configuration_parses() {
        let config = parse(
            r#"
repositories:
  - name: apps
    url: https://git.example.com/team/apps.git
    ref: main
    paths: ["stacks/*"]
    interval: 2m
    verify: {sshAllowedSigners: /etc/stackd-trust/allowed_signers, gpgKeyring: /etc/stackd-trust/keyring.asc}
    prune: false
    variables: {DOMAIN: example.com}
    decryption: {ageKeyFile: /etc/stackd-age/keys.txt}
    stacks:
      shop:
        namespace: shop-prod
        profiles: [debug]
        images: {api: registry.example.com/api:1.2}
publishedServiceType: NodePort
"#,
        )
        .unwrap();
        let repo = &config.repositories[0];
        assert_eq!(repo.source.name, "apps");
        assert_eq!(repo.source.interval, std::time::Duration::from_secs(120));
        let verify = repo.source.verify.as_ref().unwrap();
        assert_eq!(
            verify.ssh_allowed_signers.as_deref(),
            Some(Path::new("/etc/stackd-trust/allowed_signers"))
        );
        assert_eq!(
            verify.gpg_keyring.as_deref(),
            Some(Path::new("/etc/stackd-trust/keyring.asc"))
        );
        let empty =
            parse("repositories:\n  - name: apps\n    url: https://x/a.git\n    verify: {}\n");
        assert!(
            empty
                .as_ref()
                .is_err_and(|e| e.to_string().contains("repositories[0].verify")
                    && e.to_string().contains("sshAllowedSigners")),
            "{:?}",
            empty.err().map(|e| e.to_string())
        );
        assert!(!repo.policy.prune);
        assert!(!repo.policy.allow_empty);
        assert_eq!(
            repo.source.decryption,
            Some(crate::git::settings::Decryption {
                age_key_file: "/etc/stackd-age/keys.txt".into()
            })
        );
        assert_eq!(repo.policy.variables["DOMAIN"], "example.com");
        assert_eq!(
            repo.policy.stacks["shop"].namespace.as_deref(),
            Some("shop-prod")
        );
        assert_eq!(
            config.settings.published_service_type,
            ServiceTypeSetting::NodePort
        );
        assert!(!config.settings.allow_host_path);
        // Tenancy defaults: no foreign namespaces, baseline, no impersonation.
        assert!(repo.policy.namespaces.is_empty());
        assert_eq!(repo.policy.pod_security, None);
        assert_eq!(repo.policy.network_policies, None);
        assert_eq!(repo.policy.service_account_name, None);
        assert_eq!(
            (repo.policy.health_timeout.clone(), repo.policy.rollback),
            (None, None)
        );
        assert_eq!(config.settings.default_service_account_name, None);
    }

    #[test]
    fn tenancy_keys_parse() {
        let config = parse(
            r#"
repositories:
  - name: apps
    url: https://git.example.com/team/apps.git
    namespaces: ["team-a-*", kube-system]
    podSecurity: restricted
    networkPolicies: false
    serviceAccountName: deployer
    healthTimeout: 10m
    rollback: true
    stacks:
      agent: {podSecurity: privileged, networkPolicies: true, healthTimeout: 90s, rollback: false}
defaultServiceAccountName: stackd-apply
"#,
        )
        .unwrap();
        let policy = &config.repositories[0].policy;
        assert_eq!(policy.namespaces, ["team-a-*", "kube-system"]);
        assert_eq!(policy.pod_security, Some(PodSecurity::Restricted));
        assert_eq!(policy.network_policies, Some(false));
        assert_eq!(policy.stacks["agent"].network_policies, Some(true));
        assert_eq!(policy.health_timeout.as_deref(), Some("10m"));
        assert_eq!(policy.rollback, Some(true));
        assert_eq!(
            policy.stacks["agent"].health_timeout.as_deref(),
            Some("90s")
        );
        assert_eq!(policy.stacks["agent"].rollback, Some(false));
        assert_eq!(policy.service_account_name.as_deref(), Some("deployer"));
        assert_eq!(
            policy.stacks["agent"].pod_security,
            Some(PodSecurity::Privileged)
        );
        assert_eq!(
            config.settings.default_service_account_name.as_deref(),
            Some("stackd-apply")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "repositories:\n  - name: apps\n",
                "config.yaml: repositories[0]: missing field `url`",
            ),
            (
                "repositories:\n  - name: apps\n    url: x\n    interval: soon\n",
                "config.yaml: repositories[0].interval: invalid interval \"soon\"",
            ),
            (
                "repositories:\n  - name: apps\n    url: x\n    prnue: true\n",
                "config.yaml: repositories[0].prnue: unknown field `prnue`",
            ),
            (
                "repositories:\n  - name: apps\n    url: x\n    stacks: {shop: {namespace: Shop_Prod}}\n",
                "config.yaml: repositories[0].stacks.shop.namespace: \"Shop_Prod\" is not a valid namespace name",
            ),
            (
                "repositories:\n  - {name: a, url: x}\n  - {name: a, url: y}\n",
                "config.yaml: repositories[1].name: repository name \"a\" is used twice",
            ),
            ("listen: 1\n", "config.yaml: listen: unknown field `listen`"),
            (
                "apiTokenFile: /nonexistent/token\n",
                "config.yaml: apiTokenFile: cannot read /nonexistent/token",
            ),
            ("repositories: [\n", "config.yaml: invalid YAML"),
            (
                "repositories:\n  - {name: a, url: x, paths: [\"stacks/*\", \"stacks/[a\"]}\n",
                "config.yaml: repositories[0].paths[1]: invalid glob \"stacks/[a\": Pattern syntax error",
            ),
            (
                "repositories:\n  - {name: a, url: x, paths: [/srv/stacks/*]}\n",
                "config.yaml: repositories[0].paths[0]: \"/srv/stacks/*\" is outside the repository",
            ),
            (
                "repositories:\n  - {name: a, url: x, paths: [\"stacks/../../*\"]}\n",
                "config.yaml: repositories[0].paths[0]: \"stacks/../../*\" is outside the repository",
            ),
            (
                "repositories:\n  - name: apps\n    url: x\n    podSecurity: strict\n",
                "config.yaml: repositories[0].podSecurity: unknown variant `strict`",
            ),
            (
                "repositories:\n  - name: apps\n    url: x\n    stacks: {shop: {podSecurity: none}}\n",
                "config.yaml: repositories[0].stacks.shop.podSecurity: unknown variant `none`",
            ),
            (
                "repositories:\n  - name: apps\n    url: x\n    namespaces: [\"team-[\"]\n",
                "config.yaml: repositories[0].namespaces[0]: invalid glob \"team-[\"",
            ),
            (
                "repositories:\n  - name: apps\n    url: x\n    serviceAccountName: Deployer\n",
                "config.yaml: repositories[0].serviceAccountName: \"Deployer\" is not a valid ServiceAccount name",
            ),
            (
                "defaultServiceAccountName: \"a b\"\n",
                "config.yaml: defaultServiceAccountName: \"a b\" is not a valid ServiceAccount name",
            ),
        ];
        for (text, expected) in cases {
            let message = parse(text).unwrap_err().to_string();
            assert!(
                message.starts_with(expected),
                "{text:?}\n  got: {message}\n  expected: {expected}"
            );
        }
    }
}
