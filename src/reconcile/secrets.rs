//! Secret values from Git, kept in memory only: the Git source puts them here,
//! the Stack controller reads them. They never reach a `Stack` object.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::render::model::{Project, SecretValues};

/// Values of one stack at one revision.
#[derive(Clone, Debug)]
struct Entry {
    revision: String,
    values: SecretValues,
}

/// Shared, cloneable; keyed by (namespace, name) of the Stack.
#[derive(Clone, Debug, Default)]
pub struct SecretStore {
    inner: Arc<RwLock<HashMap<(String, String), Entry>>>,
}

impl SecretStore {
    pub fn new() -> Self {
        SecretStore::default()
    }

    pub fn put(&self, namespace: &str, name: &str, revision: &str, values: SecretValues) {
        let entry = Entry {
            revision: revision.to_string(),
            values,
        };
        self.write()
            .insert((namespace.to_string(), name.to_string()), entry);
    }

    /// The values for exactly this revision: values of another revision could
    /// belong to secrets that changed or vanished.
    pub fn get(&self, namespace: &str, name: &str, revision: &str) -> Option<SecretValues> {
        self.read()
            .get(&(namespace.to_string(), name.to_string()))
            .filter(|e| e.revision == revision)
            .map(|e| e.values.clone())
    }

    /// The revision and values held for a stack, whatever the revision.
    pub fn current(&self, namespace: &str, name: &str) -> Option<(String, SecretValues)> {
        self.read()
            .get(&(namespace.to_string(), name.to_string()))
            .map(|e| (e.revision.clone(), e.values.clone()))
    }

    pub fn remove(&self, namespace: &str, name: &str) {
        self.write()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    // A poisoned lock only means a writer panicked between two plain inserts.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(String, String), Entry>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, String), Entry>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Secrets whose value comes from Git (a file or a variable), as opposed to
/// external ones: without their values, the render would drop their Secret objects.
pub fn needs_values(project: &Project) -> bool {
    // Content decrypted from SOPS files travels with the values too (see `compose::load`).
    project
        .secrets
        .values()
        .any(|s| !s.external && s.content_hash.is_some())
        || project.configs.values().any(|c| c.content_hash.is_some())
        || project
            .bind_files
            .values()
            .any(|b| b.content_hash.is_some())
        || project
            .services
            .values()
            .any(|s| !s.secret_environment.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn sealed_sops_content_needs_the_values_too() {
        let mut project = Project::default();
        assert!(!needs_values(&project));
        let mut sealed = project.clone();
        sealed.configs.insert(
            "site".into(),
            crate::render::model::Config {
                content_hash: Some("0123456789".into()),
                ..Default::default()
            },
        );
        assert!(needs_values(&sealed));
        let mut service = crate::render::model::Service::default();
        service
            .secret_environment
            .insert("DSN".into(), "0123456789".into());
        project.services.insert("web".into(), Box::new(service));
        assert!(needs_values(&project));
    }

    #[test]
    fn values_are_only_given_for_their_revision() {
        let store = SecretStore::new();
        let values = SecretValues(BTreeMap::from([("db".to_string(), b"pw".to_vec())]));
        store.put("apps", "shop", "abc", values.clone());
        assert_eq!(store.get("apps", "shop", "abc"), Some(values));
        assert_eq!(store.get("apps", "shop", "def"), None);
        assert_eq!(store.get("apps", "other", "abc"), None);
        store.remove("apps", "shop");
        assert_eq!(store.get("apps", "shop", "abc"), None);
    }
}
