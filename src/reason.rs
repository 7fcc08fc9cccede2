//! Why a Stack is or is not Ready: the one list of reasons that the `Ready`
//! condition, the status page, `/api/v1/stacks`, Events, `stackd_reconcile_total`
//! (`result`) and `stackd_stack_ready` (`reason`) all use. The README's
//! "Knowing what happened" table documents each one.
//!
//! Adding a reason is one line in the `reasons!` list below.

use serde::{Deserialize, Serialize};

macro_rules! reasons {
    ($( $variant:ident => $label:literal, $doc:literal; )*) => {
        /// The `Ready` condition's reason (the name is the reason, the label is the
        /// metrics `result`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Reason {
            $( #[doc = $doc] $variant, )*
        }

        impl Reason {
            /// Every reason, in the documented order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The condition reason, e.g. `LoadFailed`.
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => stringify!($variant)),* }
            }

            /// The `result` label of `stackd_reconcile_total` for a reconcile that
            /// ends with this reason, e.g. `load_failed`; `success` when not a failure.
            pub fn label(self) -> &'static str {
                match self { $(Reason::$variant => $label),* }
            }

            /// What the reason means, for the documentation.
            pub fn doc(self) -> &'static str {
                match self { $(Reason::$variant => $doc),* }
            }

            pub fn parse(text: &str) -> Option<Reason> {
                match text { $(stringify!($variant) => Some(Reason::$variant),)* _ => None }
            }
        }
    };
}

reasons! {
    Available => "success", "Ready=True: every service is ready at the applied revision.";
    Progressing => "success", "Applied; waiting for the services to become ready.";
    Suspended => "suspended", "`spec.suspend` or `stackd.dev/suspend: \"true\"`: nothing is applied.";
    LoadFailed => "load_failed", "The commit's compose files do not load (YAML, schema, interpolation, a missing file).";
    RenderFailed => "render_failed", "The compose project loads but cannot become Kubernetes objects.";
    SecretsUnavailable => "secrets_unavailable", "A secret's value is missing: its file or its variable, or a SOPS file that cannot be decrypted.";
    SourceUnavailable => "source_unavailable", "The repository could not be fetched for longer than 3 poll intervals.";
    SourceVerificationFailed => "source_verification_failed", "The commit the ref points at has no good signature by a key of the repository's `verify:` trust (unsigned, unknown signer, bad signature, expired or revoked key): the last applied revision stays.";
    ApplyFailed => "apply_failed", "The API server refused or failed a write (the Stack itself, or one of its objects).";
    HealthTimeout => "health_timeout", "The applied revision did not become Ready within its health deadline (`healthTimeout`), or a workload failed for good (a failed Job, a Deployment past its progress deadline).";
    DependencyFailed => "dependency_failed", "A `depends_on` dependency failed for good (its Job failed): the services waiting for it are not applied.";
    RolledBack => "rolled_back", "The revision missed its health deadline; the last healthy revision was applied again and the bad one is held (`status.heldRevision`).";
    NamespaceNotAllowed => "namespace_not_allowed", "The stack's namespace is refused to its repository (README \"What a repository may do\"): nothing is applied.";
}

impl Reason {
    /// A failure: the attempted revision is not (fully) running.
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Reason::Available | Reason::Progressing | Reason::Suspended
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_round_trip_and_are_unique() {
        let mut labels = std::collections::BTreeSet::new();
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(*reason));
            if reason.is_failure() {
                assert!(labels.insert(reason.label()), "{reason}");
            } else {
                assert!(!labels.contains(reason.label()), "{reason}");
            }
            assert!(!reason.doc().is_empty());
        }
        assert_eq!(Reason::LoadFailed.as_str(), "LoadFailed");
        assert_eq!(Reason::LoadFailed.label(), "load_failed");
        assert!(Reason::ApplyFailed.is_failure());
        assert!(!Reason::Suspended.is_failure());
    }
}
