//! The built-in target when there is no cluster: plan every stack against what
//! the previous plan "applied" (an empty cluster at first), write nothing, and
//! show the plan on the status page.

use std::collections::BTreeMap;

use chrono::Utc;

use crate::crd::{InventoryEntry, StackPhase};
use crate::render::object::Rendered;
use crate::state::{PlanSummary, StackView};

/// The objects each stack's last plan would have left in the cluster, with hashes.
#[derive(Debug, Default)]
pub struct DryRunCluster {
    applied: BTreeMap<(String, String), BTreeMap<String, InventoryEntry>>,
}

fn key(entry: &InventoryEntry) -> String {
    format!("{}/{}", entry.kind, entry.name)
}

impl DryRunCluster {
    /// Plans `rendered` for one stack as creates, updates and prunes (kept
    /// instead when `prune` is off), and remembers the result as the stack's new state.
    pub fn plan(
        &mut self,
        namespace: &str,
        name: &str,
        rendered: &Rendered,
        prune: bool,
    ) -> (PlanSummary, Vec<InventoryEntry>) {
        let previous = self
            .applied
            .remove(&(namespace.to_string(), name.to_string()))
            .unwrap_or_default();
        let mut plan = PlanSummary {
            dry_run: true,
            ..PlanSummary::default()
        };
        let mut now = BTreeMap::new();
        for object in &rendered.objects {
            let entry = InventoryEntry {
                api_version: object.api_version().to_string(),
                kind: object.kind().to_string(),
                namespace: object.namespace().map(str::to_string),
                name: object.name().to_string(),
                hash: Some(object.content_hash()),
            };
            match previous.get(&key(&entry)) {
                None => plan.created.push(key(&entry)),
                Some(old) if old.hash != entry.hash => plan.updated.push(key(&entry)),
                Some(_) => plan.unchanged += 1,
            }
            now.insert(key(&entry), entry);
        }
        let gone: Vec<String> = previous
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        if prune {
            plan.pruned = gone;
        } else {
            // Kept objects stay in the "cluster", as they would in a real one.
            for key in &gone {
                if let Some(entry) = previous.get(key) {
                    now.insert(key.clone(), entry.clone());
                }
            }
            plan.kept = gone;
        }
        let inventory: Vec<InventoryEntry> = now.values().cloned().collect();
        self.applied
            .insert((namespace.to_string(), name.to_string()), now);
        (plan, inventory)
    }

    /// Forgets a stack that left Git.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.applied
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

/// The status-page view of a dry-run plan.
pub fn planned_view(
    base: StackView,
    rendered: &Rendered,
    plan: PlanSummary,
    inventory: Vec<InventoryEntry>,
) -> StackView {
    let services_total = base.services_total;
    StackView {
        phase: StackPhase::ReconciliationPending,
        message: Some(format!(
            "dry run: {} to create, {} to update, {} to prune{}; nothing was applied",
            plan.created.len(),
            plan.updated.len(),
            plan.pruned.len(),
            match plan.kept.len() {
                0 => String::new(),
                kept => format!(", {kept} kept (pruning is off)"),
            }
        )),
        services_ready: 0,
        services_total,
        warnings: rendered.warnings.clone(),
        last_error: None,
        last_sync: Some(Utc::now()),
        objects: inventory,
        last_plan: Some(plan),
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::object::Object;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn config_map(name: &str, value: &str) -> Object {
        Object::ConfigMap(ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..ObjectMeta::default()
            },
            data: Some([("k".to_string(), value.to_string())].into()),
            ..ConfigMap::default()
        })
    }

    #[test]
    fn plans_creates_then_updates_unchanged_and_prunes() {
        let mut cluster = DryRunCluster::default();
        let first = Rendered {
            objects: vec![config_map("a", "1"), config_map("b", "1")],
            warnings: vec![],
        };
        let (plan, inventory) = cluster.plan("shop", "shop", &first, true);
        assert_eq!(plan.created, ["ConfigMap/a", "ConfigMap/b"]);
        assert_eq!(inventory.len(), 2);
        let second = Rendered {
            objects: vec![config_map("a", "2"), config_map("c", "1")],
            warnings: vec![],
        };
        let (plan, _) = cluster.plan("shop", "shop", &second, true);
        assert_eq!(plan.created, ["ConfigMap/c"]);
        assert_eq!(plan.updated, ["ConfigMap/a"]);
        assert_eq!(plan.pruned, ["ConfigMap/b"]);
        let (plan, _) = cluster.plan("shop", "shop", &second, true);
        assert_eq!(
            (plan.created.len(), plan.updated.len(), plan.unchanged),
            (0, 0, 2)
        );
        assert!(plan.dry_run);
    }

    #[test]
    fn with_pruning_off_vanished_objects_are_kept_until_it_is_on() {
        let mut cluster = DryRunCluster::default();
        let both = Rendered {
            objects: vec![config_map("a", "1"), config_map("b", "1")],
            warnings: vec![],
        };
        let only_a = Rendered {
            objects: vec![config_map("a", "1")],
            warnings: vec![],
        };
        cluster.plan("shop", "shop", &both, false);
        let (plan, inventory) = cluster.plan("shop", "shop", &only_a, false);
        assert_eq!(plan.kept, ["ConfigMap/b"]);
        assert!(plan.pruned.is_empty());
        assert_eq!(inventory.len(), 2);
        let (plan, inventory) = cluster.plan("shop", "shop", &only_a, true);
        assert_eq!(plan.pruned, ["ConfigMap/b"]);
        assert!(plan.kept.is_empty());
        assert_eq!(inventory.len(), 1);
    }
}
