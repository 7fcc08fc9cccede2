//! A dry run with no cluster at all: every object of every stack is planned as
//! a create against an empty cluster (`stackd run --dry-run` without a cluster).

use crate::crd::StackStatus;
use crate::reconcile::apply;
use crate::reconcile::health;
use crate::reconcile::source::DesiredStack;
use crate::reconcile::status;
use crate::render::{RenderOptions, render, stack_for};
use crate::state::StackView;

/// One view per stack, with `last_plan` set (`dry_run: true`); a stack that does
/// not render shows Failure with the error.
pub fn plan_offline(stacks: &[DesiredStack], options: &RenderOptions) -> Vec<StackView> {
    stacks
        .iter()
        .map(|desired| {
            let stack = stack_for(
                &desired.name,
                &desired.namespace,
                desired.project.clone(),
                Some(desired.source.clone()),
            );
            match render(&stack, &desired.secrets, options) {
                Ok(rendered) => {
                    let plan = apply::plan(&desired.namespace, &rendered, &[]);
                    let services: Vec<_> = rendered
                        .objects
                        .iter()
                        .filter_map(workload_of)
                        .map(|w| health::service_health(&w).status)
                        .collect();
                    let summary = status::summary(&plan, None, true);
                    let status = StackStatus {
                        phase: Some(crate::crd::StackPhase::ReconciliationPending),
                        message: Some(format!(
                            "dry run: {} objects would be created",
                            summary.created.len()
                        )),
                        services,
                        warnings: rendered.warnings.clone(),
                        ..StackStatus::default()
                    };
                    status::view(&stack, &status, None, Some(summary))
                }
                Err(error) => {
                    let message = format!("Stack {}/{}: {error}", desired.namespace, desired.name);
                    let status = StackStatus {
                        phase: Some(crate::crd::StackPhase::Failure),
                        message: Some(message.clone()),
                        last_error: Some(message),
                        ..StackStatus::default()
                    };
                    status::view(&stack, &status, None, None)
                }
            }
        })
        .collect()
}

/// A rendered workload as the health check reads it (no status: nothing ready).
pub fn workload_of(object: &crate::render::object::Object) -> Option<health::Workload> {
    use crate::render::object::Object;
    match object {
        Object::Deployment(d) => Some(health::Workload::Deployment(d.clone())),
        Object::StatefulSet(s) => Some(health::Workload::StatefulSet(s.clone())),
        Object::DaemonSet(d) => Some(health::Workload::DaemonSet(d.clone())),
        Object::Job(j) => Some(health::Workload::Job(j.clone())),
        _ => None,
    }
}
