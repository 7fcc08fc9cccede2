//! The renderer: a `Stack` in, the complete set of Kubernetes objects out.

use crate::crd::Stack;
use crate::render::model::SecretValues;
use crate::render::object::Rendered;

/// The Service type for published ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PublishedServiceType {
    #[default]
    LoadBalancer,
    NodePort,
    ClusterIP,
}

/// Renderer settings that come from stackd's configuration, not from compose.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// Allow bind mounts of host paths outside the repository (hostPath volumes).
    pub allow_host_path: bool,
    /// Default type of `<service>-published` Services.
    pub published_service_type: PublishedServiceType,
}

/// Renders every object of `stack`. Secrets whose values are in `secrets` are
/// emitted as Secret objects; the others are referenced by name only.
pub fn render(
    stack: &Stack,
    secrets: &SecretValues,
    options: &RenderOptions,
) -> Result<Rendered, RenderError> {
    let _ = (stack, secrets, options);
    Err(RenderError::Unimplemented)
}

/// Why a stack could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the renderer is not implemented yet")]
    Unimplemented,
}

impl RenderError {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RenderError::Unimplemented => "unimplemented",
        }
    }
}
