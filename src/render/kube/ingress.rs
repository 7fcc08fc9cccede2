//! `kompose.service.expose` labels → an Ingress.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::RenderError;
use super::labels::{Scope, compose_label};
use crate::render::model;

pub const EXPOSE: &str = "kompose.service.expose";
pub const CLASS: &str = "kompose.service.expose.ingress-class-name";
pub const TLS_SECRET: &str = "kompose.service.expose.tls-secret";

/// The Ingress for a service with `kompose.service.expose`, pointing at
/// `backend` (Service name and port).
pub fn ingress(
    scope: &Scope,
    compose_name: &str,
    name: &str,
    service: &model::Service,
    backend: Option<&(String, i32)>,
) -> Result<Option<Ingress>, RenderError> {
    let Some(expose) = compose_label(service, EXPOSE) else {
        return Ok(None);
    };
    if expose.trim().eq_ignore_ascii_case("false") {
        return Ok(None);
    }
    let Some((backend_name, backend_port)) = backend else {
        return Err(RenderError::InvalidValue {
            service: compose_name.to_string(),
            field: format!("labels.{EXPOSE}"),
            reason: "an Ingress needs a port in ports or expose".to_string(),
        });
    };
    let path_to = |path: &str| HTTPIngressPath {
        path: Some(path.to_string()),
        path_type: "Prefix".to_string(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: backend_name.clone(),
                port: Some(ServiceBackendPort {
                    number: Some(*backend_port),
                    ..ServiceBackendPort::default()
                }),
            }),
            ..IngressBackend::default()
        },
    };
    let mut rules: Vec<IngressRule> = Vec::new();
    let mut hosts = Vec::new();
    for entry in expose.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        // "true" exposes the service on every host, as kompose does.
        let (host, path) = if entry.eq_ignore_ascii_case("true") {
            (None, "/".to_string())
        } else {
            match entry.split_once('/') {
                Some((host, path)) => (Some(host.to_string()), format!("/{path}")),
                None => (Some(entry.to_string()), "/".to_string()),
            }
        };
        let host = host.filter(|h| !h.is_empty());
        if let Some(h) = &host
            && !is_host(h)
        {
            return Err(RenderError::InvalidValue {
                service: compose_name.to_string(),
                field: format!("labels.{EXPOSE}"),
                reason: format!("{h:?} is not a lower-case DNS host name"),
            });
        }
        if let Some(h) = &host
            && !hosts.contains(h)
        {
            hosts.push(h.clone());
        }
        match rules.iter_mut().find(|r| r.host == host) {
            Some(rule) => {
                if let Some(http) = rule.http.as_mut() {
                    http.paths.push(path_to(&path));
                }
            }
            None => rules.push(IngressRule {
                host,
                http: Some(HTTPIngressRuleValue {
                    paths: vec![path_to(&path)],
                }),
            }),
        }
    }
    let tls = compose_label(service, TLS_SECRET).map(|secret| {
        vec![IngressTLS {
            hosts: (!hosts.is_empty()).then_some(hosts),
            secret_name: Some(secret.to_string()),
        }]
    });
    Ok(Some(Ingress {
        metadata: scope.meta(name, Some(name)),
        spec: Some(IngressSpec {
            ingress_class_name: compose_label(service, CLASS).map(str::to_string),
            rules: Some(rules),
            tls,
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }))
}

/// A DNS-1123 subdomain, optionally with a leading `*.` wildcard, as Ingress hosts must be.
fn is_host(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    host.len() <= 253
        && host
            .split('.')
            .all(|part| super::names::label_problem(part, super::names::MAX_LABEL).is_none())
}
