//! What can go wrong while reconciling, and which failures are worth a retry.

use crate::reason::Reason;
use crate::reconcile::apply::ApplyError;
use crate::render::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Stack {stack}: {source}")]
    Render { stack: String, source: RenderError },
    #[error("Stack {stack}: {source}")]
    Apply { stack: String, source: ApplyError },
    #[error("writing the status of Stack {stack}: {source}")]
    WriteStatus { stack: String, source: kube::Error },
    #[error("applying namespace {namespace}: {}", server_says(source))]
    ApplyNamespace {
        namespace: String,
        source: kube::Error,
    },
    #[error("applying Stack {stack}: {}", server_says(source))]
    ApplyStack { stack: String, source: kube::Error },
    #[error("listing the Stacks of repository {repository}: {source}")]
    ListStacks {
        repository: String,
        source: kube::Error,
    },
    #[error("listing namespaces: {source}")]
    ListNamespaces { source: kube::Error },
    #[error("deleting Stack {stack}: {source}")]
    DeleteStack { stack: String, source: kube::Error },
    #[error(
        "refusing to delete all {count} Stacks of repository {repository}: none is in Git any more (allow it with allow_prune_all)"
    )]
    WouldDeleteAllStacks { repository: String, count: usize },
    #[error("Stack {stack}: its stored object does not read as a Stack: {message}")]
    UnreadableStack { stack: String, message: String },
    #[error("Stack {stack}: metadata.{field} is missing")]
    MissingMetadata { stack: String, field: &'static str },
    #[error("not writing: this replica is not the leader (or is shutting down)")]
    NotLeader,
    /// Tenancy: the stack's namespace is refused; nothing of it is applied.
    /// `message` names the compose file and the namespace.
    #[error("Stack {stack}: {message}")]
    NamespaceNotAllowed { stack: String, message: String },
}

impl ReconcileError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ReconcileError::Render { source, .. } => source.label(),
            ReconcileError::Apply { source, .. } => source.label(),
            ReconcileError::WriteStatus { .. } => "write_status",
            ReconcileError::ApplyNamespace { .. } => "apply_namespace",
            ReconcileError::ApplyStack { .. } => "apply_stack",
            ReconcileError::ListStacks { .. } => "list_stacks",
            ReconcileError::ListNamespaces { .. } => "list_namespaces",
            ReconcileError::DeleteStack { .. } => "delete_stack",
            ReconcileError::WouldDeleteAllStacks { .. } => "would_delete_all_stacks",
            ReconcileError::UnreadableStack { .. } => "unreadable_stack",
            ReconcileError::MissingMetadata { .. } => "missing_metadata",
            ReconcileError::NotLeader => "not_leader",
            ReconcileError::NamespaceNotAllowed { .. } => "namespace_not_allowed",
        }
    }

    /// The Stack's Ready reason for this failure, when it is one of a stack's
    /// (not of the daemon: a lost lease, a failed status write).
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ReconcileError::Render { .. } => Some(Reason::RenderFailed),
            ReconcileError::Apply { .. }
            | ReconcileError::ApplyStack { .. }
            | ReconcileError::ApplyNamespace { .. } => Some(Reason::ApplyFailed),
            _ => None,
        }
    }

    /// Worth retrying with backoff: the cluster may answer differently later.
    /// Invalid input is not: it waits for the next change of the Stack.
    pub fn is_transient(&self) -> bool {
        match self {
            ReconcileError::Render { .. }
            | ReconcileError::WouldDeleteAllStacks { .. }
            | ReconcileError::MissingMetadata { .. }
            | ReconcileError::UnreadableStack { .. }
            | ReconcileError::NotLeader
            | ReconcileError::NamespaceNotAllowed { .. } => false,
            ReconcileError::Apply { source, .. } => apply_error_is_transient(source),
            ReconcileError::WriteStatus { source, .. }
            | ReconcileError::ApplyNamespace { source, .. }
            | ReconcileError::ApplyStack { source, .. }
            | ReconcileError::ListStacks { source, .. }
            | ReconcileError::ListNamespaces { source }
            | ReconcileError::DeleteStack { source, .. } => is_transient(source),
        }
    }
}

/// What the API server said, in one line: `422 Invalid: <its message>`.
pub fn server_says(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

/// Server errors, throttling, conflicts and transport failures; not 4xx rejections.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            status.code >= 500 || status.code == 429 || status.code == 409 || status.code == 408
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

pub fn apply_error_is_transient(error: &ApplyError) -> bool {
    match error {
        ApplyError::Apply { source, .. }
        | ApplyError::Recreate { source, .. }
        | ApplyError::ListForPrune { source, .. }
        | ApplyError::Prune { source, .. } => is_transient(source),
        ApplyError::StillTerminating { .. } => true,
        ApplyError::WouldPruneEverything { .. } | ApplyError::Cancelled { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("m", "r").with_code(code),
        ))
    }

    #[test]
    fn server_errors_throttling_and_conflicts_are_transient() {
        for code in [500, 503, 429, 409] {
            assert!(is_transient(&api(code)), "{code}");
        }
        for code in [400, 403, 404, 422] {
            assert!(!is_transient(&api(code)), "{code}");
        }
        let render = ReconcileError::Render {
            stack: "a/b".into(),
            source: RenderError::MissingMetadata {
                field: "metadata.name",
            },
        };
        assert!(!render.is_transient());
        assert_eq!(render.label(), "missing_metadata");
    }
}
