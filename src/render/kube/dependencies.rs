//! `depends_on` with `restart: true`: a dependent's pods roll when its
//! dependency's pod template changes. The dependent's pod template carries the
//! dependency's template hash, so a new dependency template is a new dependent
//! template (applied after the dependency is Ready again, by the waves).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::render::model::Project;
use crate::render::object::{Object, short_hash};

use super::labels::RESTART_ON;
use super::names::sanitise;

fn template_mut(object: &mut Object) -> Option<&mut PodTemplateSpec> {
    match object {
        Object::Deployment(d) => d.spec.as_mut().map(|s| &mut s.template),
        Object::StatefulSet(s) => s.spec.as_mut().map(|s| &mut s.template),
        Object::DaemonSet(d) => d.spec.as_mut().map(|s| &mut s.template),
        Object::Job(j) => j.spec.as_mut().map(|s| &mut s.template),
        _ => None,
    }
}

fn workload_name(object: &Object) -> Option<&str> {
    matches!(
        object,
        Object::Deployment(_) | Object::StatefulSet(_) | Object::DaemonSet(_) | Object::Job(_)
    )
    .then(|| object.name())
}

/// Adds `stackd.dev/restart-on: db=<hash>,...` to the pod template of each
/// workload with `restart: true` dependencies. `names` maps compose service
/// names to the workload names.
pub fn annotate_restarts(
    project: &Project,
    names: &BTreeMap<&str, String>,
    objects: &mut [Object],
) {
    let mut hashes = BTreeMap::new();
    for object in objects.iter_mut() {
        let Some(name) = workload_name(object).map(str::to_string) else {
            continue;
        };
        if let Some(template) = template_mut(object) {
            let bytes = serde_json::to_vec(template).expect("templates always serialise");
            hashes.insert(name, short_hash(&bytes));
        }
    }
    for (compose_name, service) in &project.services {
        let restarts: Vec<String> = service
            .depends_on
            .iter()
            .filter(|(_, d)| d.restart)
            .filter_map(|(dependency, _)| {
                let name = names
                    .get(dependency.as_str())
                    .cloned()
                    .unwrap_or_else(|| sanitise(dependency));
                Some(format!("{name}={}", hashes.get(&name)?))
            })
            .collect();
        let Some(own) = names.get(compose_name.as_str()) else {
            continue;
        };
        if restarts.is_empty() {
            continue;
        }
        let target = objects
            .iter_mut()
            .find(|o| workload_name(o) == Some(own.as_str()));
        if let Some(template) = target.and_then(template_mut) {
            template
                .metadata
                .get_or_insert_with(Default::default)
                .annotations
                .get_or_insert_with(Default::default)
                .insert(RESTART_ON.to_string(), restarts.join(","));
        }
    }
}
