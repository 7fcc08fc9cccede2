//! What the Git source and the reconciler publish, and the HTTP surface reads.
//!
//! Writers replace whole entries; readers take a cheap snapshot. HTTP handlers
//! never call the Kubernetes API or git: everything they show comes from here.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crd::{HistoryEntry, InventoryEntry, ServiceStatus, StackPhase};
use crate::field_diff::FieldChange;
use crate::reason::Reason;

/// A repository as the status page shows it. URLs never carry credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryView {
    pub name: String,
    pub url: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: Option<String>,
    pub subject: Option<String>,
    pub last_poll: Option<DateTime<Utc>>,
    /// `unchanged`, `fetched`, `force_pushed`, `failed`, `timeout` or `unverified`
    /// (a commit refused by `verify:`).
    pub last_result: Option<String>,
    pub next_poll: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// What one reconcile changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub pruned: Vec<String>,
    /// No longer rendered but left alone: pruning is off for the stack, the
    /// object is annotated `stackd.dev/prune: disabled`, or it is a volume claim.
    pub kept: Vec<String>,
    pub unchanged: usize,
    pub dry_run: bool,
    /// The changed fields of each updated object (`Kind/name`), old → new, as
    /// they were before this apply; kept in memory only, never in the Stack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diffs: Vec<ObjectDiff>,
}

/// Events kept per stack for the page.
pub const EVENTS_KEPT: usize = 20;

/// One Event about a stack: one stackd published for the Stack, or one about
/// an object of its inventory (a Deployment's scaling, a Service's load balancer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub time: DateTime<Utc>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub kind: String,
    pub reason: String,
    pub note: String,
    /// The object it is about (`Kind/name`); absent for the Stack itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The Event's `namespace/name`: a repeated Event (its series) replaces its
    /// earlier copy. Absent for the Events stackd published itself.
    #[serde(skip)]
    pub id: Option<String>,
}

/// Merges `event` into `events` (oldest first) by time, replacing an earlier
/// copy of the same Event, and keeps the newest [`EVENTS_KEPT`].
pub fn merge_event(events: &mut Vec<EventView>, event: EventView) {
    if event.id.is_some() {
        events.retain(|e| e.id != event.id);
    }
    let at = events.partition_point(|e| e.time <= event.time);
    events.insert(at, event);
    let excess = events.len().saturating_sub(EVENTS_KEPT);
    events.drain(..excess);
}

/// One updated object's changed fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDiff {
    /// `Kind/name`.
    pub object: String,
    pub changes: Vec<FieldChange>,
}

/// A stack as the status page shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StackView {
    pub namespace: String,
    pub name: String,
    pub repository: Option<String>,
    pub path: Option<String>,
    pub revision: Option<String>,
    pub phase: StackPhase,
    /// The Stack's `Ready` reason, the same word `kubectl get stack` shows.
    pub reason: Option<Reason>,
    /// The commit last tried, when it differs from `revision` (the applied one).
    pub last_attempted_revision: Option<String>,
    pub message: Option<String>,
    pub services_ready: u32,
    pub services_total: u32,
    pub services: Vec<ServiceStatus>,
    pub warnings: Vec<String>,
    pub last_error: Option<String>,
    pub last_sync: Option<DateTime<Utc>>,
    pub objects: Vec<InventoryEntry>,
    pub last_plan: Option<PlanSummary>,
    /// `status.history`: the last revisions that touched the stack, oldest first.
    pub history: Vec<HistoryEntry>,
    /// The last [`EVENTS_KEPT`] Events of the stack and of its objects, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventView>,
    /// The services' `depends_on`, ports and volumes, for the page's picture.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shapes: Vec<crate::http::picture::ServiceShape>,
    /// With `--shards`: the stack's shard, and the replica holding it (as the
    /// Leases said when last read); filled in when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// Identifies a stack: namespace, then name.
pub type StackKey = (String, String);

/// What the view of a stack another replica reconciles (`--shards`) keeps:
/// the part its Stack's status carries. Kept as deflated JSON, decoded when
/// read: a typed view costs an allocation per string, several times the
/// text, and the text's repeated keys deflate to about a third.
#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Kept {
    #[serde(skip_serializing_if = "Option::is_none")]
    repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    phase: StackPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_attempted_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    services_ready: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    services: Vec<ServiceStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    objects: Vec<InventoryEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    history: Vec<HistoryEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shapes: Vec<crate::http::picture::ServiceShape>,
}

impl Kept {
    fn bytes_of(view: &StackView) -> Box<[u8]> {
        let kept = Kept {
            repository: view.repository.clone(),
            path: view.path.clone(),
            revision: view.revision.clone(),
            phase: view.phase,
            reason: view.reason,
            last_attempted_revision: view.last_attempted_revision.clone(),
            message: view.message.clone(),
            services_ready: view.services_ready,
            services: view.services.clone(),
            warnings: view.warnings.clone(),
            last_error: view.last_error.clone(),
            objects: view.objects.clone(),
            history: view.history.clone(),
            shapes: view.shapes.clone(),
        };
        crate::deflate::deflate(&serde_json::to_vec(&kept).unwrap_or_default())
    }

    /// The view again; `None` only for bytes this module did not write.
    fn view_of(key: &StackKey, bytes: &[u8]) -> Option<StackView> {
        let json = crate::deflate::inflate(bytes)?;
        let kept: Kept = serde_json::from_slice(&json).ok()?;
        Some(StackView {
            namespace: key.0.clone(),
            name: key.1.clone(),
            repository: kept.repository,
            path: kept.path,
            revision: kept.revision,
            phase: kept.phase,
            reason: kept.reason,
            last_attempted_revision: kept.last_attempted_revision,
            message: kept.message,
            services_ready: kept.services_ready,
            services_total: u32::try_from(kept.services.len()).unwrap_or(u32::MAX),
            services: kept.services,
            warnings: kept.warnings,
            last_error: kept.last_error,
            objects: kept.objects,
            history: kept.history,
            shapes: kept.shapes,
            ..StackView::default()
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub repositories: BTreeMap<String, RepositoryView>,
    #[serde(skip)]
    pub stacks: BTreeMap<StackKey, StackView>,
    /// Why the last configuration reload was refused (the previous one stays in force).
    pub config_error: Option<String>,
}

/// The shared, cloneable handle.
#[derive(Clone, Debug, Default)]
pub struct SharedState {
    inner: Arc<RwLock<Snapshot>>,
    /// Where stack outcomes go for commit statuses and notifications.
    observer: Arc<std::sync::OnceLock<crate::notify::Observer>>,
    /// With `--shards`: who holds each shard.
    shards: Arc<std::sync::OnceLock<crate::reconcile::shards::ShardHolders>>,
    /// Object Events that came before their stack's first view.
    pending_events: Arc<std::sync::Mutex<BTreeMap<StackKey, Vec<EventView>>>>,
    /// With `--shards`: every Stack as its status says ([`Kept`], deflated),
    /// for the stacks of shards this replica does not hold.
    remote: Arc<RwLock<BTreeMap<StackKey, Box<[u8]>>>>,
}

/// Whether `event` is about an object of `view`'s inventory, in its namespace.
fn about_inventory(view: &StackView, event: &EventView) -> bool {
    let Some((kind, name)) = event.object.as_deref().and_then(|o| o.split_once('/')) else {
        return false;
    };
    view.objects.iter().any(|o| {
        o.kind == kind && o.name == name && o.namespace.as_deref() == Some(view.namespace.as_str())
    })
}

impl SharedState {
    pub fn new() -> Self {
        SharedState::default()
    }

    /// A consistent copy of everything.
    pub fn snapshot(&self) -> Snapshot {
        self.read().clone()
    }

    pub fn repositories(&self) -> Vec<RepositoryView> {
        self.read().repositories.values().cloned().collect()
    }

    /// Every stack: with `--shards` also those other replicas hold.
    pub fn stacks(&self) -> Vec<StackView> {
        let stacks: Vec<StackView> = {
            let snapshot = self.read();
            let remote = self.remote();
            let keys: std::collections::BTreeSet<&StackKey> =
                snapshot.stacks.keys().chain(remote.keys()).collect();
            keys.into_iter()
                .filter_map(|key| {
                    self.choose(key, snapshot.stacks.get(key), remote.get(key).map(|t| &**t))
                })
                .collect()
        };
        stacks.into_iter().map(|v| self.with_shard(v)).collect()
    }

    pub fn stack(&self, namespace: &str, name: &str) -> Option<StackView> {
        let key = (namespace.to_string(), name.to_string());
        let view = {
            let snapshot = self.read();
            let remote = self.remote();
            self.choose(
                &key,
                snapshot.stacks.get(&key),
                remote.get(&key).map(|t| &**t),
            )
        };
        view.map(|v| self.with_shard(v))
    }

    /// A stack's view: this replica's own while it holds the stack's shard (or
    /// has nothing else), else the one its Stack's status gives, so that every
    /// replica tells what the holder wrote.
    fn choose(
        &self,
        key: &StackKey,
        local: Option<&StackView>,
        remote: Option<&[u8]>,
    ) -> Option<StackView> {
        match (local, remote) {
            (Some(view), Some(text)) if !self.holds(key) => {
                Kept::view_of(key, text).or_else(|| Some(view.clone()))
            }
            (Some(view), _) => Some(view.clone()),
            (None, Some(text)) => Kept::view_of(key, text),
            (None, None) => None,
        }
    }

    /// Whether this replica holds the stack's shard; always without `--shards`.
    fn holds(&self, key: &StackKey) -> bool {
        let Some(holders) = self.shards.get() else {
            return true;
        };
        holders
            .of_stack(&key.0, &key.1)
            .is_none_or(|(shard, _)| holders.holds(shard))
    }

    /// Records a Stack as its status says (`--shards`): shown for as long as
    /// another replica holds its shard.
    pub fn put_remote(&self, view: &StackView) {
        let key = (view.namespace.clone(), view.name.clone());
        let text = Kept::bytes_of(view);
        self.remote_mut().insert(key, text);
    }

    pub fn remove_remote(&self, namespace: &str, name: &str) {
        self.remote_mut()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Keeps only the Stacks of `keys` (after a full list).
    pub fn retain_remote(&self, keys: &std::collections::BTreeSet<StackKey>) {
        self.remote_mut().retain(|key, _| keys.contains(key));
    }

    /// How many Stacks are recorded by [`put_remote`](Self::put_remote), and their bytes.
    pub fn remote_size(&self) -> (usize, usize) {
        let remote = self.remote();
        (remote.len(), remote.values().map(|t| t.len()).sum())
    }

    /// Shows each stack's shard and holder from now on (`--shards`).
    pub fn set_shards(&self, holders: crate::reconcile::shards::ShardHolders) {
        let _ = self.shards.set(holders);
    }

    fn with_shard(&self, mut view: StackView) -> StackView {
        if let Some((shard, replica)) = self
            .shards
            .get()
            .and_then(|h| h.of_stack(&view.namespace, &view.name))
        {
            view.shard = Some(shard);
            view.replica = replica;
        }
        view
    }

    pub fn config_error(&self) -> Option<String> {
        self.read().config_error.clone()
    }

    pub fn set_config_error(&self, error: Option<String>) {
        self.write().config_error = error;
    }

    /// Drops repositories that are no longer configured.
    pub fn retain_repositories(&self, names: &std::collections::BTreeSet<String>) {
        self.write()
            .repositories
            .retain(|name, _| names.contains(name));
    }

    pub fn put_repository(&self, view: RepositoryView) {
        self.write().repositories.insert(view.name.clone(), view);
    }

    pub fn put_stack(&self, view: StackView) {
        let key = (view.namespace.clone(), view.name.clone());
        self.write().stacks.insert(key, view);
    }

    /// Replaces a stack's view but keeps the Events it has, which arrive on
    /// their own ([`add_events`](Self::add_events), [`add_object_event`](Self::add_object_event)).
    /// A stack's first view takes the object Events held for it meanwhile.
    pub fn put_stack_keeping_events(&self, mut view: StackView) {
        let key = (view.namespace.clone(), view.name.clone());
        let mut snapshot = self.write();
        match snapshot.stacks.get_mut(&key) {
            Some(previous) => view.events = std::mem::take(&mut previous.events),
            None => {
                let held = self.pending().remove(&key).unwrap_or_default();
                let held: Vec<EventView> = held
                    .into_iter()
                    .filter(|e| about_inventory(&view, e))
                    .collect();
                for event in held {
                    merge_event(&mut view.events, event);
                }
            }
        }
        snapshot.stacks.insert(key, view);
    }

    /// Merges Events stackd published for a stack into its view (see [`merge_event`]).
    pub fn add_events(&self, namespace: &str, name: &str, events: Vec<EventView>) {
        let mut snapshot = self.write();
        let key = (namespace.to_string(), name.to_string());
        if let Some(view) = snapshot.stacks.get_mut(&key) {
            for event in events {
                merge_event(&mut view.events, event);
            }
        }
    }

    /// Merges an Event about one of a stack's objects into its view when the
    /// object is in the stack's inventory. Before the stack's first view (the
    /// watch's first list after a start comes before the first reconcile) it
    /// is held, at most [`EVENTS_KEPT`] a stack. Returns whether it was kept.
    pub fn add_object_event(&self, namespace: &str, name: &str, event: EventView) -> bool {
        let mut snapshot = self.write();
        let key = (namespace.to_string(), name.to_string());
        match snapshot.stacks.get_mut(&key) {
            Some(view) if about_inventory(view, &event) => {
                merge_event(&mut view.events, event);
                true
            }
            Some(_) => false,
            None => {
                merge_event(self.pending().entry(key).or_default(), event);
                true
            }
        }
    }

    pub fn remove_stack(&self, namespace: &str, name: &str) -> Option<StackView> {
        if let Some(observer) = self.observer.get() {
            observer.forget(namespace, name);
        }
        let key = (namespace.to_string(), name.to_string());
        self.pending().remove(&key);
        self.write().stacks.remove(&key)
    }

    /// Sets where [`observe`](Self::observe) sends; once, at start.
    pub fn set_observer(&self, observer: crate::notify::Observer) {
        let _ = self.observer.set(observer);
    }

    /// Reports a stack's outcome for commit statuses and notifications; never
    /// waits. The one hook every reconciler calls when it learns an outcome.
    pub fn observe(&self, observation: crate::notify::Observation) {
        if let Some(observer) = self.observer.get() {
            observer.observe(observation);
        }
    }

    // A poisoned lock only means a writer panicked mid-update of plain data;
    // showing the last state is better than taking the status page down.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    // Taken after `read()`/`write()` when both are needed.
    fn remote(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<StackKey, Box<[u8]>>> {
        self.remote.read().unwrap_or_else(|e| e.into_inner())
    }

    fn remote_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<StackKey, Box<[u8]>>> {
        self.remote.write().unwrap_or_else(|e| e.into_inner())
    }

    // Taken after `write()` when both are needed.
    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<StackKey, Vec<EventView>>> {
        self.pending_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(minute: i64, reason: &str, id: Option<&str>) -> EventView {
        EventView {
            time: DateTime::from_timestamp(minute * 60, 0).unwrap_or_default(),
            reason: reason.into(),
            id: id.map(str::to_string),
            ..EventView::default()
        }
    }

    fn reasons(events: &[EventView]) -> Vec<&str> {
        events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn an_object_event_before_the_first_view_is_held_and_kept_only_for_the_inventory() {
        let state = SharedState::new();
        let about = |object: &str, minute| EventView {
            object: Some(object.into()),
            ..event(minute, object, Some(object))
        };
        assert!(state.add_object_event("shop", "shop", about("Deployment/web", 1)));
        assert!(state.add_object_event("shop", "shop", about("Deployment/gone", 2)));
        let web = InventoryEntry {
            kind: "Deployment".into(),
            name: "web".into(),
            namespace: Some("shop".into()),
            ..InventoryEntry::default()
        };
        let view = StackView {
            namespace: "shop".into(),
            name: "shop".into(),
            objects: vec![web],
            ..StackView::default()
        };
        state.put_stack_keeping_events(view.clone());
        let shown = state.stack("shop", "shop").unwrap().events;
        assert_eq!(reasons(&shown), ["Deployment/web"]);
        // Once the view exists, an object outside the inventory is refused.
        assert!(!state.add_object_event("shop", "shop", about("Service/other", 3)));
        assert!(state.add_object_event("shop", "shop", about("Deployment/web", 4)));
        state.add_events("shop", "shop", vec![event(3, "Applied", None)]);
        // A new status keeps them.
        state.put_stack_keeping_events(view);
        let shown = state.stack("shop", "shop").unwrap().events;
        assert_eq!(reasons(&shown), ["Applied", "Deployment/web"]);
    }

    /// A stack of five services as the holder's controller shows it after
    /// `revisions` commits, from its Stack's status alone.
    fn five_services(name: &str, revisions: usize) -> StackView {
        let services: Vec<ServiceStatus> = (0..5)
            .map(|i| ServiceStatus {
                name: format!("service-{i}"),
                kind: "Deployment".into(),
                desired: 1,
                ready: 1,
                updated: 1,
            })
            .collect();
        let mut objects = vec![InventoryEntry {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            namespace: None,
            name: name.into(),
            hash: Some("b7d55254b2".into()),
        }];
        for service in &services {
            for (api_version, kind) in [("apps/v1", "Deployment"), ("v1", "Service")] {
                objects.push(InventoryEntry {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    namespace: Some(name.into()),
                    name: service.name.clone(),
                    hash: Some(format!(
                        "{:010x}",
                        (objects.len() as u64 + 1) * 0x2545_f491_4f6c
                    )),
                });
            }
        }
        let history = (0..revisions)
            .map(|i| HistoryEntry {
                // Commit ids deflate as little as real ones.
                revision: {
                    let mix = |n: u64| (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    let i = i as u64;
                    format!(
                        "{:016x}{:016x}{:08x}",
                        mix(i),
                        mix(i + 99),
                        mix(i + 7) >> 32
                    )
                },
                subject: Some(format!("change {i}")),
                attempted_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + i as i64)
                        .unwrap_or_default(),
                ),
                outcome: crate::crd::HistoryOutcome::Applied,
                reason: None,
                seconds_to_ready: Some(4),
                created: 0,
                updated: 1,
                pruned: 0,
            })
            .collect();
        StackView {
            namespace: name.into(),
            name: name.into(),
            repository: Some("https://git.example.com/apps.git".into()),
            path: Some(format!("stacks/{name}")),
            revision: Some("a".repeat(40)),
            phase: StackPhase::Available,
            reason: Some(Reason::Available),
            message: Some("All 5 services are ready".into()),
            services_ready: 5,
            services_total: 5,
            shapes: services
                .iter()
                .map(|s| crate::http::picture::ServiceShape {
                    name: s.name.clone(),
                    depends_on: vec!["service-0".into()],
                    ports: vec!["80".into()],
                    volumes: vec![],
                })
                .collect(),
            services,
            objects,
            history,
            ..StackView::default()
        }
    }

    #[test]
    fn a_stack_of_another_replica_is_shown_as_its_status_says_from_compact_text() {
        let state = SharedState::new();
        let view = five_services("shop", 1);
        state.put_remote(&view);
        assert_eq!(state.stack("shop", "shop"), Some(view.clone()));
        assert_eq!(state.stacks(), vec![view]);
        // What one such stack costs each replica (README: sharding).
        let (_, fresh) = state.remote_size();
        state.put_remote(&five_services("shop", crate::crd::HISTORY_LIMIT));
        let (count, full) = state.remote_size();
        eprintln!("kept per stack: {fresh} bytes, {full} with a full history");
        assert_eq!(count, 1);
        assert!(fresh < 1_000, "{fresh} bytes");
        assert!(full < 2_000, "{full} bytes");
        state.remove_remote("shop", "shop");
        assert_eq!(state.stacks(), vec![]);
    }

    #[test]
    fn the_holder_shows_its_own_view_and_the_others_the_stacks_status() {
        let state = SharedState::new();
        let holders = crate::reconcile::shards::ShardHolders::new(1, "me");
        state.set_shards(holders.clone());
        let own = StackView {
            message: Some("as this replica's controller sees it".into()),
            last_sync: Some(Utc::now()),
            ..five_services("shop", 1)
        };
        state.put_stack(own.clone());
        state.put_remote(&five_services("shop", 1));
        state.put_remote(&five_services("blog", 1));
        let messages = |state: &SharedState| -> Vec<Option<String>> {
            state.stacks().into_iter().map(|v| v.message).collect()
        };
        // Another replica holds the shard: its Stack's status is the truth.
        holders.set(0, Some("other".into()));
        let status = five_services("shop", 1).message;
        assert_eq!(messages(&state), vec![status.clone(), status.clone()]);
        assert_eq!(
            state.stack("shop", "shop").unwrap().replica.as_deref(),
            Some("other")
        );
        // This one holds it: its controller's view, with what only it knows.
        holders.set(0, Some("me".into()));
        assert_eq!(messages(&state), vec![status, own.message.clone()]);
        assert_eq!(
            state.stack("shop", "shop").unwrap().last_sync,
            own.last_sync
        );
        // A full list that no longer has `blog`.
        state.retain_remote(&[("shop".to_string(), "shop".to_string())].into());
        assert_eq!(state.stacks().len(), 1);
    }

    #[test]
    fn events_merge_by_time_a_repeated_one_replaces_its_copy_and_the_newest_are_kept() {
        let mut events = vec![event(1, "Applied", None), event(5, "Pruned", None)];
        merge_event(
            &mut events,
            event(3, "ScalingReplicaSet", Some("shop/web.1")),
        );
        assert_eq!(reasons(&events), ["Applied", "ScalingReplicaSet", "Pruned"]);
        // The same Event again, later (its series went on): moved, not doubled.
        merge_event(
            &mut events,
            event(7, "ScalingReplicaSet", Some("shop/web.1")),
        );
        assert_eq!(reasons(&events), ["Applied", "Pruned", "ScalingReplicaSet"]);
        for minute in 10..40 {
            merge_event(&mut events, event(minute, &format!("r{minute}"), None));
        }
        assert_eq!(events.len(), EVENTS_KEPT);
        assert_eq!(events[0].reason, "r20");
        assert_eq!(events[EVENTS_KEPT - 1].reason, "r39");
        // An Event older than every kept one goes straight away.
        merge_event(&mut events, event(2, "Late", Some("shop/old.1")));
        assert_eq!(events[0].reason, "r20");
    }
}
