//! Pod Security Standards at render time: what the stack's level forbids is
//! refused here, naming the service and the compose field, instead of coming
//! back as an opaque 403 from admission. Under `restricted` the securityContext
//! that level requires is filled in where the compose file is silent.
//! Rules: <https://kubernetes.io/docs/concepts/security/pod-security-standards/>.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RenderError;

/// A Pod Security Standards level (`podSecurity:` in the configuration).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurity {
    Privileged,
    #[default]
    Baseline,
    Restricted,
}

impl PodSecurity {
    /// The label value Pod Security admission reads.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurity::Privileged => "privileged",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Restricted => "restricted",
        }
    }
}

/// Namespace labels that make admission enforce (and warn about) a level.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
pub const WARN_LABEL: &str = "pod-security.kubernetes.io/warn";

/// Capabilities `baseline` lets a container add.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The one capability `restricted` lets a container add.
const RESTRICTED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// The "safe" sysctls `baseline` allows (as of Kubernetes 1.29).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Checks `pod` (rendered for compose service `service`) against `level`, and
/// under `restricted` fills in the required securityContext. The pod spec is
/// checked rather than the compose model so that nothing the renderer emits
/// escapes the rules; each refusal names the compose field it came from.
pub fn enforce(level: PodSecurity, service: &str, pod: &mut PodSpec) -> Result<(), RenderError> {
    if level == PodSecurity::Privileged {
        return Ok(());
    }
    let refuse = |field: String, reason: &str| RenderError::PodSecurity {
        service: service.to_string(),
        field,
        level: level.as_str(),
        reason: reason.to_string(),
    };
    for (set, field) in [
        (pod.host_network, "network_mode: host"),
        (pod.host_pid, "pid: host"),
        (pod.host_ipc, "ipc: host"),
    ] {
        if set == Some(true) {
            return Err(refuse(field.into(), "host namespaces are forbidden"));
        }
    }
    for volume in pod.volumes.iter().flatten() {
        if let Some(host) = &volume.host_path {
            return Err(refuse(
                format!("volumes: bind mount of host path {:?}", host.path),
                "hostPath volumes are forbidden",
            ));
        }
    }
    let sysctls = pod
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref());
    for sysctl in sysctls.into_iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            return Err(refuse(
                format!("sysctls: {}", sysctl.name),
                "only the safe sysctls are allowed",
            ));
        }
    }
    for container in &pod.containers {
        check_container(level, container, &refuse)?;
    }
    if level == PodSecurity::Restricted {
        fill_restricted(pod);
    }
    Ok(())
}

fn check_container(
    level: PodSecurity,
    container: &Container,
    refuse: &impl Fn(String, &str) -> RenderError,
) -> Result<(), RenderError> {
    let ports = container.ports.iter().flatten();
    if let Some(port) = ports.filter_map(|p| p.host_port).find(|p| *p != 0) {
        return Err(refuse(
            format!("ports: host port {port}"),
            "host ports are forbidden",
        ));
    }
    let Some(context) = &container.security_context else {
        return Ok(());
    };
    if context.privileged == Some(true) {
        return Err(refuse(
            "privileged".into(),
            "privileged containers are forbidden",
        ));
    }
    let allowed = match level {
        PodSecurity::Restricted => RESTRICTED_CAPABILITIES,
        _ => BASELINE_CAPABILITIES,
    };
    let added = context.capabilities.as_ref().and_then(|c| c.add.as_ref());
    if let Some(capability) = added
        .into_iter()
        .flatten()
        .find(|c| !allowed.contains(&c.as_str()))
    {
        return Err(refuse(
            format!("cap_add: {capability}"),
            &format!("only {} may be added", allowed.join(", ")),
        ));
    }
    if level == PodSecurity::Restricted && context.run_as_user == Some(0) {
        return Err(refuse(
            "user: 0".into(),
            "containers must not run as root (uid 0)",
        ));
    }
    Ok(())
}

/// What `restricted` requires and compose cannot say: non-root, the runtime's
/// seccomp profile, no privilege escalation, and every capability dropped
/// (added to whatever `cap_drop` lists).
fn fill_restricted(pod: &mut PodSpec) {
    let pod_context = pod
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    pod_context.run_as_non_root = Some(true);
    pod_context.seccomp_profile = Some(SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        localhost_profile: None,
    });
    for container in &mut pod.containers {
        let context = container
            .security_context
            .get_or_insert_with(SecurityContext::default);
        context.allow_privilege_escalation = Some(false);
        let capabilities = context
            .capabilities
            .get_or_insert_with(Capabilities::default);
        let drop = capabilities.drop.get_or_insert_with(Vec::new);
        if !drop.iter().any(|c| c == "ALL") {
            drop.insert(0, "ALL".to_string());
        }
    }
}
