//! `deploy.placement` → node affinity and topology spread constraints.

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::labels::is_label_value;
use super::warnings::Warnings;
use crate::render::model::Placement;

const HOSTNAME: &str = "kubernetes.io/hostname";
const CONTROL_PLANE: &str = "node-role.kubernetes.io/control-plane";

/// Scheduling fields of one pod spec.
#[derive(Debug, Default, PartialEq)]
pub struct Scheduling {
    pub affinity: Option<Affinity>,
    pub topology_spread: Vec<TopologySpreadConstraint>,
}

/// Placement for a service whose pods match `selector`.
pub fn scheduling(
    service: &str,
    placement: Option<&Placement>,
    selector: &LabelSelector,
    warnings: &mut Warnings,
) -> Scheduling {
    let Some(placement) = placement else {
        return Scheduling::default();
    };
    let requirements: Vec<NodeSelectorRequirement> = placement
        .constraints
        .iter()
        .filter_map(|c| {
            let parsed = requirement(c);
            if let Err(reason) = &parsed {
                warnings.ignored(
                    service,
                    &format!("deploy.placement.constraints {c:?}"),
                    reason,
                );
            }
            parsed.ok()
        })
        .collect();
    let affinity = (!requirements.is_empty()).then(|| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(requirements),
                    ..NodeSelectorTerm::default()
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    });

    let mut topology_spread = Vec::new();
    for preference in &placement.spread {
        let key = preference
            .strip_prefix("spread=")
            .unwrap_or(preference)
            .trim();
        match key.strip_prefix("node.labels.") {
            Some(label) if !label.is_empty() => {
                topology_spread.push(spread(label, 1, "ScheduleAnyway", selector))
            }
            _ => warnings.ignored(
                service,
                &format!("deploy.placement.preferences spread={key}"),
                "only node.labels.* can be spread over",
            ),
        }
    }
    if let Some(max) = placement.max_replicas_per_node.filter(|n| *n > 0) {
        let skew = i32::try_from(max).unwrap_or(i32::MAX);
        topology_spread.push(spread(HOSTNAME, skew, "DoNotSchedule", selector));
    }
    Scheduling {
        affinity,
        topology_spread,
    }
}

fn spread(
    key: &str,
    max_skew: i32,
    when: &str,
    selector: &LabelSelector,
) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew,
        topology_key: key.to_string(),
        when_unsatisfiable: when.to_string(),
        label_selector: Some(selector.clone()),
        ..TopologySpreadConstraint::default()
    }
}

/// One swarm constraint (`node.labels.disk == ssd`) as a node-selector requirement,
/// or why it cannot be one.
fn requirement(constraint: &str) -> Result<NodeSelectorRequirement, &'static str> {
    let (lhs, equal, rhs) = if let Some((l, r)) = constraint.split_once("==") {
        (l, true, r)
    } else if let Some((l, r)) = constraint.split_once("!=") {
        (l, false, r)
    } else {
        return Err("a constraint needs == or !=");
    };
    let (lhs, rhs) = (lhs.trim(), rhs.trim());
    let key = match lhs {
        "node.hostname" => HOSTNAME.to_string(),
        "node.platform.os" => "kubernetes.io/os".to_string(),
        "node.platform.arch" => "kubernetes.io/arch".to_string(),
        "node.role" => {
            let on_manager = match rhs {
                "manager" => equal,
                "worker" => !equal,
                _ => return Err("node.role is manager or worker"),
            };
            return Ok(NodeSelectorRequirement {
                key: CONTROL_PLANE.to_string(),
                operator: if on_manager { "Exists" } else { "DoesNotExist" }.to_string(),
                values: None,
            });
        }
        other => match other.strip_prefix("node.labels.") {
            Some(label) if !label.is_empty() => label.to_string(),
            _ => {
                return Err(
                    "only node.labels, node.hostname, node.platform and node.role map to node labels",
                );
            }
        },
    };
    let value = if lhs == "node.platform.arch" {
        kubernetes_arch(rhs)
    } else {
        rhs
    };
    if value.is_empty() || !is_label_value(value) {
        return Err("the value is not a valid Kubernetes label value");
    }
    Ok(NodeSelectorRequirement {
        key,
        operator: if equal { "In" } else { "NotIn" }.to_string(),
        values: Some(vec![value.to_string()]),
    })
}

/// Swarm reports `uname -m` names; Kubernetes nodes use Go's.
fn kubernetes_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7l" => "arm",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn selector() -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "stackd.dev/service".to_string(),
                "web".to_string(),
            )])),
            ..LabelSelector::default()
        }
    }

    #[test]
    fn constraints_become_required_node_affinity() {
        let placement: Placement = serde_json::from_value(json!({
            "constraints": [
                "node.labels.disk == ssd",
                "node.hostname != node-1",
                "node.platform.os==linux",
                "node.platform.arch == x86_64",
                "node.role == manager",
                "engine.labels.foo == bar"
            ],
            "spread": ["node.labels.zone", "node.id"],
            "maxReplicasPerNode": 2
        }))
        .unwrap();
        let mut w = Warnings::default();
        let s = scheduling("web", Some(&placement), &selector(), &mut w);
        assert_eq!(
            serde_json::to_value(&s.affinity).unwrap(),
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                "matchExpressions": [
                    {"key": "disk", "operator": "In", "values": ["ssd"]},
                    {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["node-1"]},
                    {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
                ]
            }]}}})
        );
        let sel = json!({"matchLabels": {"stackd.dev/service": "web"}});
        assert_eq!(
            serde_json::to_value(&s.topology_spread).unwrap(),
            json!([
                {"labelSelector": sel, "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"},
                {"labelSelector": sel, "maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
            ])
        );
        assert_eq!(
            w.finish(),
            vec![
                "service \"web\": deploy.placement.constraints \"engine.labels.foo == bar\" is ignored (only node.labels, node.hostname, node.platform and node.role map to node labels)",
                "service \"web\": deploy.placement.preferences spread=node.id is ignored (only node.labels.* can be spread over)",
            ]
        );
    }

    #[test]
    fn worker_role_and_no_placement() {
        let placement: Placement =
            serde_json::from_value(json!({"constraints": ["node.role==worker"]})).unwrap();
        let mut w = Warnings::default();
        let s = scheduling("web", Some(&placement), &selector(), &mut w);
        assert_eq!(
            serde_json::to_value(&s.affinity).unwrap()["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchExpressions"],
            json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}])
        );
        // Never an architecture constraint the file did not ask for.
        assert_eq!(
            scheduling("web", None, &selector(), &mut w),
            Scheduling::default()
        );
    }
}
