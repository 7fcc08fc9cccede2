//! Compose networks as NetworkPolicies: pods carry one label per network they
//! join, and each service's policy admits only pods that share a network with it
//! (plus anyone on its published and Ingress ports). A service all of whose
//! networks are `internal` may only send to its networks' pods and to DNS.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service as KubeService;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::STACK_LABEL;
use crate::render::model::{Project, Service};
use crate::render::object::{Object, short_hash};

use super::labels::Scope;
use super::warnings::Warnings;

/// Prefix of the pod label that says a pod is on a compose network.
pub const NETWORK_LABEL_PREFIX: &str = "stackd.dev/network-";

/// The network a service without `networks:` is on, as in compose.
const DEFAULT_NETWORK: &str = "default";

/// The compose networks `service` joins.
pub fn networks_of(service: &Service) -> Vec<&str> {
    if service.networks.is_empty() {
        vec![DEFAULT_NETWORK]
    } else {
        service.networks.iter().map(String::as_str).collect()
    }
}

/// The pod label key for compose network `network`: a valid label name (at most
/// 63 characters, alphanumeric at both ends), hashed when it would not be.
pub fn network_label(network: &str) -> String {
    let name = format!("network-{network}");
    let valid = name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        format!("stackd.dev/{name}")
    } else {
        format!("{NETWORK_LABEL_PREFIX}{}", short_hash(network.as_bytes()))
    }
}

/// One compose service as the policies see it.
pub struct PolicyInput<'a> {
    pub compose_name: &'a str,
    /// Its Kubernetes name (pod selector value, policy name).
    pub name: &'a str,
    pub service: &'a Service,
}

/// Labels the pod templates of `objects` with their networks and adds one
/// NetworkPolicy per service.
pub fn add(
    scope: &Scope,
    project: &Project,
    services: &[PolicyInput],
    objects: &mut Vec<Object>,
    warnings: &mut Warnings,
) {
    for (name, network) in &project.networks {
        if network.external {
            warnings.push(format!(
                "network {name:?}: external; only this stack's services on it may reach each other (pods of other stacks cannot be admitted by a NetworkPolicy)"
            ));
        }
    }
    // Indexes built once: a stack may have thousands of services.
    let workloads: BTreeMap<String, usize> = objects
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            matches!(
                o,
                Object::Deployment(_)
                    | Object::StatefulSet(_)
                    | Object::DaemonSet(_)
                    | Object::Job(_)
            )
        })
        .map(|(i, o)| (o.name().to_string(), i))
        .collect();
    let open = open_ports_by_service(objects);
    let mut policies = Vec::new();
    for input in services {
        let networks = networks_of(input.service);
        if input.service.ignored.iter().any(|f| f == "network_mode") {
            warnings.service(
                input.compose_name,
                "network_mode cannot be expressed as a NetworkPolicy; its pods are on network \"default\"",
            );
        }
        if let Some(&index) = workloads.get(input.name) {
            label_pods(&mut objects[index], &networks);
        }
        let open_ports = open.get(input.name).cloned().unwrap_or_default();
        let all_internal = networks
            .iter()
            .all(|n| project.networks.get(*n).is_some_and(|n| n.internal));
        policies.push(policy(
            scope,
            input.name,
            &networks,
            open_ports,
            all_internal,
        ));
    }
    objects.extend(policies.into_iter().map(Object::NetworkPolicy));
}

fn label_pods(object: &mut Object, networks: &[&str]) {
    {
        let template = match object {
            Object::Deployment(d) => d.spec.as_mut().map(|s| &mut s.template),
            Object::StatefulSet(s) => s.spec.as_mut().map(|s| &mut s.template),
            Object::DaemonSet(d) => d.spec.as_mut().map(|s| &mut s.template),
            Object::Job(j) => j.spec.as_mut().map(|s| &mut s.template),
            _ => None,
        };
        if let Some(template) = template {
            let labels = template
                .metadata
                .get_or_insert_with(Default::default)
                .labels
                .get_or_insert_with(BTreeMap::new);
            for network in networks {
                labels.insert(network_label(network), "true".to_string());
            }
        }
    }
}

type OpenPorts = Vec<(String, IntOrString)>;

/// Container ports reachable from anywhere, by Kubernetes service name: those
/// behind its `-published` and `-random-ports` Services, and behind Ingresses.
fn open_ports_by_service(objects: &[Object]) -> BTreeMap<String, OpenPorts> {
    let services: BTreeMap<&str, &KubeService> = objects
        .iter()
        .filter_map(|o| match o {
            Object::Service(s) => Some((o.name(), s)),
            _ => None,
        })
        .collect();
    let selected = |service: &KubeService| {
        service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|s| s.get(crate::crd::SERVICE_LABEL))
            .cloned()
    };
    let mut open: BTreeMap<String, OpenPorts> = BTreeMap::new();
    let mut admit = |service: &KubeService, port: Option<(&str, i32)>| {
        let Some(pods) = selected(service) else {
            return;
        };
        let ports = open.entry(pods).or_default();
        let spec_ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
        for p in spec_ports.into_iter().flatten() {
            let chosen = match port {
                None => true,
                Some((port_name, number)) => {
                    p.port == number || p.name.as_deref().is_some_and(|n| n == port_name)
                }
            };
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_string());
            let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
            if chosen && !ports.contains(&(protocol.clone(), target.clone())) {
                ports.push((protocol, target));
            }
        }
    };
    for (name, service) in &services {
        if name.ends_with("-published") || name.ends_with("-random-ports") {
            admit(service, None);
        }
    }
    for object in objects {
        let Object::Ingress(ingress) = object else {
            continue;
        };
        let rules = ingress.spec.as_ref().and_then(|s| s.rules.as_ref());
        let paths = rules
            .into_iter()
            .flatten()
            .filter_map(|r| r.http.as_ref())
            .flat_map(|h| h.paths.iter());
        for path in paths {
            let Some(backend) = path.backend.service.as_ref() else {
                continue;
            };
            let Some(service) = services.get(backend.name.as_str()) else {
                continue;
            };
            let port = backend.port.as_ref();
            let number = port.and_then(|p| p.number).unwrap_or(-1);
            let port_name = port.and_then(|p| p.name.clone()).unwrap_or_default();
            admit(service, Some((&port_name, number)));
        }
    }
    open
}

fn peers(scope: &Scope, networks: &[&str]) -> Vec<NetworkPolicyPeer> {
    networks
        .iter()
        .map(|network| NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (STACK_LABEL.to_string(), scope.stack.clone()),
                    (network_label(network), "true".to_string()),
                ])),
                ..LabelSelector::default()
            }),
            ..NetworkPolicyPeer::default()
        })
        .collect()
}

fn policy(
    scope: &Scope,
    name: &str,
    networks: &[&str],
    open_ports: OpenPorts,
    all_internal: bool,
) -> NetworkPolicy {
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(peers(scope, networks)),
        ports: None,
    }];
    if !open_ports.is_empty() {
        // No `from`: any source, on these ports only.
        ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(
                open_ports
                    .into_iter()
                    .map(|(protocol, port)| NetworkPolicyPort {
                        protocol: Some(protocol),
                        port: Some(port),
                        end_port: None,
                    })
                    .collect(),
            ),
        });
    }
    let mut policy_types = vec!["Ingress".to_string()];
    let egress = all_internal.then(|| {
        policy_types.push("Egress".to_string());
        vec![
            NetworkPolicyEgressRule {
                to: Some(peers(scope, networks)),
                ports: None,
            },
            // DNS, wherever the cluster runs it.
            NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(
                    ["UDP", "TCP"]
                        .into_iter()
                        .map(|protocol| NetworkPolicyPort {
                            protocol: Some(protocol.to_string()),
                            port: Some(IntOrString::Int(53)),
                            end_port: None,
                        })
                        .collect(),
                ),
            },
        ]
    });
    NetworkPolicy {
        metadata: scope.meta(name, Some(name)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(scope.selector(name)),
            policy_types: Some(policy_types),
            ingress: Some(ingress),
            egress,
        }),
    }
}
