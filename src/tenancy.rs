//! What a repository may do with namespaces. Pure: the caller looks the
//! namespace up in the cluster (or cannot, offline); this decides.
//!
//! A stack may target a namespace that does not exist yet (stackd creates it
//! and labels it `app.kubernetes.io/managed-by=stackd`) or one stackd created
//! (it has that label). Any other existing namespace needs a match in the
//! repository's `namespaces` allow list. `kube-*`, `default` and stackd's own
//! namespace need more: an allow-list entry that is exactly their name. A glob
//! such as `*` or `kube-*` never admits them, so a broad pattern written for
//! team namespaces cannot open the control plane by accident.

use std::collections::BTreeMap;

use crate::render::PodSecurity;

/// Label on the namespaces stackd creates (as on the Stacks it writes): which
/// repository's stack created it, as a hash of the repository name.
pub const REPOSITORY_LABEL: &str = "stackd.dev/repository";

/// Label stackd puts on the namespaces it creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "stackd";

/// What the configuration lets one stack do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tenancy {
    /// The stack's `podSecurity`, else the repository's; `None` is `baseline`.
    pub pod_security: Option<PodSecurity>,
    /// The stack's `networkPolicies`, else the repository's; `None` is true.
    pub network_policies: Option<bool>,
    /// The repository's `serviceAccountName`, else the daemon's `defaultServiceAccountName`.
    pub service_account_name: Option<String>,
    /// The stack's `healthTimeout`, else the repository's; `None` is 5m.
    pub health_timeout: Option<String>,
    /// The stack's `rollback`, else the repository's; `None` is off.
    pub rollback: Option<bool>,
    pub namespaces: NamespaceRules,
    /// The stack's main compose file (repository path), named in refusals.
    pub file: String,
}

/// The user a write impersonates: `system:serviceaccount:<namespace>:<name>`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The namespace rules of one repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceRules {
    /// The repository's `namespaces` allow list (globs).
    pub allowed: Vec<String>,
    /// The namespace stackd itself runs in.
    pub own_namespace: Option<String>,
}

/// Why a stack may write into its namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// It does not exist: stackd creates it (and so owns it).
    Create,
    /// stackd created it.
    Stackd,
    /// Someone else's namespace, admitted by the allow list: stackd writes the
    /// stack's objects there but never the Namespace object itself.
    Allowed,
}

impl Access {
    /// Whether stackd owns the Namespace object (creates it, labels it).
    pub fn owns_namespace(self) -> bool {
        matches!(self, Access::Create | Access::Stackd)
    }
}

/// Why a namespace is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceRefusal {
    #[error(
        "namespace {namespace:?} is not allowed: kube-*, default and stackd's own namespace need an exact entry in the repository's namespaces list"
    )]
    Reserved { namespace: String },
    #[error(
        "namespace {namespace:?} is not allowed: it exists and stackd did not create it; add it to the repository's namespaces list"
    )]
    Foreign { namespace: String },
    #[error(
        "namespace {namespace:?} is not allowed: stackd created it for another repository's stack; add it to this repository's namespaces list"
    )]
    OtherRepository { namespace: String },
}

/// `kube-*` and `default`: refused without looking at the cluster.
pub fn is_fixed_reserved(namespace: &str) -> bool {
    namespace == "default" || namespace.starts_with("kube-")
}

fn is_reserved(namespace: &str, rules: &NamespaceRules) -> bool {
    is_fixed_reserved(namespace) || rules.own_namespace.as_deref() == Some(namespace)
}

fn listed_exactly(namespace: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|pattern| pattern == namespace)
}

fn glob_allows(namespace: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|pattern| {
        glob::Pattern::new(pattern).is_ok_and(|p| p.matches(namespace)) || pattern == namespace
    })
}

/// The offline part of the rule (`stackd render`): the fixed names only.
pub fn check_fixed(namespace: &str, allowed: &[String]) -> Result<(), NamespaceRefusal> {
    match is_fixed_reserved(namespace) && !listed_exactly(namespace, allowed) {
        true => Err(NamespaceRefusal::Reserved {
            namespace: namespace.to_string(),
        }),
        false => Ok(()),
    }
}

/// The whole rule. `existing` holds the namespace's labels, or `None` when it
/// does not exist. `repository` is this repository's [`REPOSITORY_LABEL`]
/// value: a namespace stackd created for another repository is not this
/// one's (`None`, e.g. `stackd diff`, does not tell them apart).
pub fn admit(
    namespace: &str,
    existing: Option<&BTreeMap<String, String>>,
    rules: &NamespaceRules,
    repository: Option<&str>,
) -> Result<Access, NamespaceRefusal> {
    if is_reserved(namespace, rules) {
        return match listed_exactly(namespace, &rules.allowed) {
            true if existing.is_none() => Ok(Access::Create),
            true => Ok(Access::Allowed),
            false => Err(NamespaceRefusal::Reserved {
                namespace: namespace.to_string(),
            }),
        };
    }
    let Some(labels) = existing else {
        return Ok(Access::Create);
    };
    let stackds = labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE);
    // Created before namespaces recorded their repository: stackd's, whoever's.
    let owner = labels.get(REPOSITORY_LABEL).map(String::as_str);
    let others = matches!((owner, repository), (Some(owner), Some(mine)) if owner != mine);
    if stackds && !others {
        return Ok(Access::Stackd);
    }
    match glob_allows(namespace, &rules.allowed) {
        true => Ok(Access::Allowed),
        false if stackds => Err(NamespaceRefusal::OtherRepository {
            namespace: namespace.to_string(),
        }),
        false => Err(NamespaceRefusal::Foreign {
            namespace: namespace.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allowed: &[&str]) -> NamespaceRules {
        NamespaceRules {
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            own_namespace: Some("stackd-system".into()),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kube_system_default_and_own_namespace_need_an_exact_entry() {
        let none = labels(&[]);
        for namespace in ["kube-system", "kube-public", "default", "stackd-system"] {
            for allowed in [&[][..], &["*"], &["kube-*"], &["*-system"]] {
                assert!(
                    matches!(
                        admit(namespace, Some(&none), &rules(allowed), None),
                        Err(NamespaceRefusal::Reserved { .. })
                    ),
                    "{namespace} with {allowed:?}"
                );
            }
            assert_eq!(
                admit(namespace, Some(&none), &rules(&[namespace]), None),
                Ok(Access::Allowed)
            );
        }
        // Even a kube-* namespace that does not exist yet.
        assert!(admit("kube-new", None, &rules(&[]), None).is_err());
    }

    #[test]
    fn new_and_stackd_namespaces_are_admitted_foreign_ones_need_the_list() {
        let ours = labels(&[(MANAGED_BY_LABEL, MANAGED_BY_VALUE)]);
        let theirs = labels(&[(MANAGED_BY_LABEL, "helm")]);
        assert_eq!(admit("shop", None, &rules(&[]), None), Ok(Access::Create));
        assert_eq!(
            admit("shop", Some(&ours), &rules(&[]), None),
            Ok(Access::Stackd)
        );
        assert_eq!(
            admit("shop", Some(&theirs), &rules(&[]), None),
            Err(NamespaceRefusal::Foreign {
                namespace: "shop".into()
            })
        );
        assert_eq!(
            admit("team-a-shop", Some(&theirs), &rules(&["team-a-*"]), None),
            Ok(Access::Allowed)
        );
        assert!(admit("team-b-shop", Some(&theirs), &rules(&["team-a-*"]), None).is_err());
    }

    #[test]
    fn a_namespace_stackd_created_for_another_repository_needs_the_list() {
        let of = |repository: &str| {
            labels(&[
                (MANAGED_BY_LABEL, MANAGED_BY_VALUE),
                (REPOSITORY_LABEL, repository),
            ])
        };
        let mine = Some("aaaa");
        assert_eq!(
            admit("shop", Some(&of("aaaa")), &rules(&[]), mine),
            Ok(Access::Stackd)
        );
        assert_eq!(
            admit("shop", Some(&of("bbbb")), &rules(&[]), mine),
            Err(NamespaceRefusal::OtherRepository {
                namespace: "shop".into()
            })
        );
        assert_eq!(
            admit("shop", Some(&of("bbbb")), &rules(&["shop"]), mine),
            Ok(Access::Allowed)
        );
        // Without a repository (stackd diff), any namespace stackd created passes.
        assert_eq!(
            admit("shop", Some(&of("bbbb")), &rules(&[]), None),
            Ok(Access::Stackd)
        );
    }

    #[test]
    fn offline_check_refuses_the_fixed_names_only() {
        assert!(check_fixed("kube-system", &[]).is_err());
        assert!(check_fixed("default", &["*".into()]).is_err());
        assert!(check_fixed("default", &["default".into()]).is_ok());
        assert!(check_fixed("shop", &[]).is_ok());
        assert!(check_fixed("stackd-system", &[]).is_ok());
    }
}
