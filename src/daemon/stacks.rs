//! From a repository at a commit to loaded stacks: load each discovered stack's
//! compose files with the repository's and the stack's settings. Pure apart
//! from reading the commit's files.

use std::collections::BTreeMap;

use crate::config::RepositoryPolicy;
use crate::crd::SourceRef;
use crate::git::DiscoveredStack;
use crate::git::source::RepositoryUpdate;
use crate::reason::Reason;
use crate::render::compose::At;
use crate::render::files::FileError;
use crate::render::model::{Project, SecretValues};
use crate::render::{self, LoadError, LoadOptions, PodSecurity};

/// One stack of a repository, loaded or not.
#[derive(Debug)]
pub struct LoadedStack {
    /// The stack name, sanitised into a Kubernetes name.
    pub name: String,
    pub namespace: String,
    pub source: SourceRef,
    pub suspended: bool,
    /// The stack's `podSecurity`, else the repository's.
    pub pod_security: Option<PodSecurity>,
    /// The stack's `networkPolicies`, else the repository's.
    pub network_policies: Option<bool>,
    /// The stack's `healthTimeout`, else the repository's.
    pub health_timeout: Option<String>,
    /// The stack's `rollback`, else the repository's.
    pub rollback: Option<bool>,
    /// The main compose file (repository path), for messages.
    pub file: String,
    pub result: Result<(Project, SecretValues), LoadError>,
}

/// The error for a stack whose sanitised `name` is not a DNS label, about its
/// compose file.
fn invalid_name(name: &str, stack: &DiscoveredStack) -> Option<LoadError> {
    let reason = render::stack_name_problem(name)?;
    let file = stack.files.first().unwrap_or(&stack.dir);
    Some(LoadError::InvalidValue {
        at: At::file(file),
        message: format!(
            "stack name {name:?} (from {:?}) is not a valid Kubernetes name: {reason}",
            stack.name
        ),
    })
}

/// The Ready reason for a stack that does not load: a secret whose file or
/// variable is missing, or a SOPS file that cannot be decrypted, is
/// `SecretsUnavailable`; anything else `LoadFailed`.
pub fn load_reason(error: &LoadError) -> Reason {
    if let LoadError::File {
        source: FileError::Sops { .. },
        ..
    } = error
    {
        return Reason::SecretsUnavailable;
    }
    let at = match error {
        LoadError::File { at, .. }
        | LoadError::Path { at, .. }
        | LoadError::InvalidValue { at, .. }
        | LoadError::Interpolation { at, .. } => at,
        _ => return Reason::LoadFailed,
    };
    if at.path.starts_with("secrets.") {
        Reason::SecretsUnavailable
    } else {
        Reason::LoadFailed
    }
}

/// Loads the stacks of `update` one at a time, as the iterator is advanced: a
/// commit of thousands is never held loaded all at once unless collected.
pub fn load_stacks<'a>(
    update: &'a RepositoryUpdate,
    policy: &'a RepositoryPolicy,
) -> impl Iterator<Item = LoadedStack> + 'a {
    update.stacks.iter().map(move |stack| {
        let name = render::sanitise_name(&stack.name);
        let settings = policy
            .stacks
            .get(&stack.name)
            .or_else(|| policy.stacks.get(&name));
        let mut variables: BTreeMap<String, String> = policy.variables.clone();
        if let Some(settings) = settings {
            variables.extend(settings.variables.clone());
        }
        let options = LoadOptions {
            dir: stack.dir.clone(),
            files: stack.files.clone(),
            env_files: Vec::new(),
            variables,
            profiles: settings.map(|s| s.profiles.clone()).unwrap_or_default(),
            images: settings.map(|s| s.images.clone()).unwrap_or_default(),
            decryption: update.decryption.clone(),
        };
        // A directory name that cannot become a Kubernetes name fails this
        // stack alone; the API server would refuse it and stop the whole sync.
        let result = match invalid_name(&name, stack) {
            Some(error) => Err(error),
            None => render::load(update.reader.as_ref(), &options)
                .map(|loaded| (loaded.project, loaded.secrets)),
        };
        LoadedStack {
            namespace: settings
                .and_then(|s| s.namespace.clone())
                .unwrap_or_else(|| name.clone()),
            name,
            source: SourceRef {
                repository: update.url.clone(),
                path: stack.dir.to_string(),
                revision: update.commit.clone(),
                subject: Some(update.subject.clone()).filter(|s| !s.is_empty()),
            },
            suspended: policy.suspend || settings.is_some_and(|s| s.suspend),
            pod_security: settings
                .and_then(|s| s.pod_security)
                .or(policy.pod_security),
            network_policies: settings
                .and_then(|s| s.network_policies)
                .or(policy.network_policies),
            health_timeout: settings
                .and_then(|s| s.health_timeout.clone())
                .or(policy.health_timeout.clone()),
            rollback: settings.and_then(|s| s.rollback).or(policy.rollback),
            file: stack.files.first().unwrap_or(&stack.dir).to_string(),
            result,
        }
    })
}
