//! Kubernetes Services of a compose service: the internal one, `-published` and
//! `-random-ports`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{Scope, compose_label};
use super::names::{self, MAX_LABEL, Origin};
use super::warnings::Warnings;
use super::{PublishedServiceType, RenderError};
use crate::render::model;

/// The placeholder port of a headless Service without ports, as CoK did.
const PLACEHOLDER_PORT: i32 = 55555;

/// The Services of one compose service, and which one an Ingress should use.
#[derive(Debug, Default)]
pub struct ServiceSet {
    pub services: Vec<Service>,
    /// Name and first port of the Service an Ingress points at.
    pub ingress_backend: Option<(String, i32)>,
}

pub struct ServiceInput<'a> {
    pub scope: &'a Scope,
    pub compose_name: &'a str,
    pub name: &'a str,
    pub service: &'a model::Service,
    pub default_published_type: PublishedServiceType,
    pub is_job: bool,
}

impl ServiceInput<'_> {
    pub fn render(&self, warnings: &mut Warnings) -> Result<ServiceSet, RenderError> {
        let service = self.service;
        let has_ports = !service.ports.is_empty() || !service.expose.is_empty();
        if self.is_job && !has_ports {
            return Ok(ServiceSet::default());
        }
        let origin = Origin::Service(self.compose_name.to_string());
        let mut set = ServiceSet::default();

        let mut internal_ports: Vec<ServicePort> = Vec::new();
        // A set of names, not a scan of the list: `expose` ranges can be huge.
        let mut internal_names = std::collections::BTreeSet::new();
        let targets = service
            .ports
            .iter()
            .map(|p| (p.target, p.protocol.as_str()))
            .chain(service.expose.iter().map(|e| (e.port, e.protocol.as_str())));
        for (port, protocol) in targets {
            let protocol = self.protocol(protocol)?;
            let name = format!("{port}-{}", protocol.to_ascii_lowercase());
            if internal_names.insert(name.clone()) {
                internal_ports.push(port_of(name, i32::from(port), i32::from(port), protocol));
            }
        }
        let cluster_ip = !internal_ports.is_empty() && self.wants_cluster_ip();
        let first_internal = internal_ports.first().map(|p| p.port);
        if internal_ports.is_empty() {
            internal_ports.push(ServicePort {
                name: Some("headless".to_string()),
                port: PLACEHOLDER_PORT,
                target_port: Some(IntOrString::Int(PLACEHOLDER_PORT)),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            });
        }
        set.services.push(self.object(
            self.name.to_string(),
            if cluster_ip {
                "ClusterIP"
            } else {
                "ClusterIP-None"
            },
            internal_ports,
        ));
        if let Some(port) = first_internal {
            set.ingress_backend = Some((self.name.to_string(), port));
        }

        let mut published = Vec::new();
        let mut random = Vec::new();
        for (index, port) in service.ports.iter().enumerate() {
            let protocol = self.protocol(&port.protocol)?;
            if port.host_ip.is_some() {
                warnings.ignored(
                    self.compose_name,
                    &format!("ports[{index}].host_ip"),
                    "a Service listens on every node address",
                );
            }
            if port.mode.as_deref() == Some("host") {
                warnings.ignored(
                    self.compose_name,
                    &format!("ports[{index}].mode host"),
                    "ports are published through a Service",
                );
            }
            let lower = protocol.to_ascii_lowercase();
            let (list, number) = match port.published {
                Some(number) => (&mut published, number),
                None => (&mut random, port.target),
            };
            let name = format!("{number}-{lower}");
            match list
                .iter()
                .find(|p: &&ServicePort| p.name.as_deref() == Some(&name))
            {
                Some(existing)
                    if existing.target_port != Some(IntOrString::Int(i32::from(port.target))) =>
                {
                    return Err(RenderError::InvalidValue {
                        service: self.compose_name.to_string(),
                        field: format!("ports[{index}]"),
                        reason: format!(
                            "port {number}/{lower} is published twice to different container ports"
                        ),
                    });
                }
                Some(_) => {}
                None => list.push(port_of(
                    name,
                    i32::from(number),
                    i32::from(port.target),
                    protocol,
                )),
            }
        }
        if !published.is_empty() {
            let name = names::checked(format!("{}-published", self.name), &origin, MAX_LABEL)?;
            set.ingress_backend = published.first().map(|p| (name.clone(), p.port));
            let kind = self.published_type(warnings);
            set.services.push(self.object(name, kind, published));
        }
        if !random.is_empty() {
            let name = names::checked(format!("{}-random-ports", self.name), &origin, MAX_LABEL)?;
            set.services.push(self.object(name, "NodePort", random));
        }
        Ok(set)
    }

    fn wants_cluster_ip(&self) -> bool {
        let vip = self
            .service
            .deploy
            .as_ref()
            .and_then(|d| d.endpoint_mode.as_deref())
            == Some("vip");
        let extension = self
            .service
            .x_kubernetes
            .as_ref()
            .and_then(|x| x.internal_service_type.as_deref())
            .is_some_and(|t| t.eq_ignore_ascii_case("clusterip"));
        vip || extension
    }

    /// `kompose.service.type`, else the daemon's default.
    fn published_type(&self, warnings: &mut Warnings) -> &'static str {
        let label = compose_label(self.service, "kompose.service.type");
        match label.map(|t| t.to_ascii_lowercase()).as_deref() {
            Some("loadbalancer") => "LoadBalancer",
            Some("nodeport") => "NodePort",
            Some("clusterip") => "ClusterIP",
            Some(other) => {
                warnings.ignored(
                    self.compose_name,
                    &format!("label kompose.service.type={other}"),
                    "use loadbalancer, nodeport or clusterip",
                );
                default_type(self.default_published_type)
            }
            None => default_type(self.default_published_type),
        }
    }

    fn protocol(&self, protocol: &str) -> Result<&'static str, RenderError> {
        match protocol.to_ascii_lowercase().as_str() {
            "tcp" | "" => Ok("TCP"),
            "udp" => Ok("UDP"),
            "sctp" => Ok("SCTP"),
            other => Err(RenderError::InvalidValue {
                service: self.compose_name.to_string(),
                field: "ports".to_string(),
                reason: format!("protocol {other:?} is not tcp, udp or sctp"),
            }),
        }
    }

    /// `kind` is a Service type, or `ClusterIP-None` for headless.
    fn object(&self, name: String, kind: &str, ports: Vec<ServicePort>) -> Service {
        let headless = kind == "ClusterIP-None";
        Service {
            metadata: self.scope.meta(&name, Some(self.name)),
            spec: Some(ServiceSpec {
                type_: Some(if headless { "ClusterIP" } else { kind }.to_string()),
                cluster_ip: headless.then(|| "None".to_string()),
                selector: Some(self.scope.selector_labels(self.name)),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }
}

fn default_type(kind: PublishedServiceType) -> &'static str {
    match kind {
        PublishedServiceType::LoadBalancer => "LoadBalancer",
        PublishedServiceType::NodePort => "NodePort",
        PublishedServiceType::ClusterIP => "ClusterIP",
    }
}

fn port_of(name: String, port: i32, target: i32, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some(protocol.to_string()),
        ..ServicePort::default()
    }
}

/// `model::Port` → container ports, deduplicated, for the pod spec.
pub fn container_ports(service: &model::Service) -> Vec<k8s_openapi::api::core::v1::ContainerPort> {
    let mut ports: Vec<k8s_openapi::api::core::v1::ContainerPort> = Vec::new();
    // A set, not `ports.contains`: an `expose` range can hold tens of thousands of ports.
    let mut seen = std::collections::BTreeSet::new();
    let all = service
        .ports
        .iter()
        .map(|p| (p.target, p.protocol.as_str()))
        .chain(service.expose.iter().map(|e| (e.port, e.protocol.as_str())));
    for (port, protocol) in all {
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "udp" => "UDP",
            "sctp" => "SCTP",
            _ => "TCP",
        };
        if seen.insert((port, protocol)) {
            ports.push(k8s_openapi::api::core::v1::ContainerPort {
                container_port: i32::from(port),
                protocol: Some(protocol.to_string()),
                ..Default::default()
            });
        }
    }
    ports
}
