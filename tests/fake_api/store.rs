//! The object store and the write semantics the reconciler relies on: resource
//! versions, generations, status isolation, immutable fields, server-side
//! apply, garbage collection and the change history watches replay.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

use super::error::ApiError;
use super::fields::{self, FieldSet, ManagedEntry};
use super::patch;
use super::resources::{self, ResourceType};
use super::selector::{FieldSelector, LabelSelector};
use super::validate::{
    check_immutable, check_name, check_namespace, check_pod_template,
    check_selector_matches_template, check_type, validate_name,
};

/// How many changes watches can replay; older resource versions get 410 Gone.
const HISTORY_LIMIT: usize = 1000;

/// `(group, plural, namespace, name)`; the namespace is empty for cluster-scoped kinds.
type ObjectKey = (&'static str, &'static str, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One stored write, as watches see it.
#[derive(Debug)]
pub struct Change {
    pub resource_version: u64,
    pub rt: &'static ResourceType,
    pub namespace: String,
    pub kind: ChangeKind,
    /// The object before a modification, to turn selector transitions into ADDED/DELETED.
    pub previous: Option<Value>,
    pub object: Value,
}

/// Which part of an object a write targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Main,
    Status,
}

impl Scope {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Main => None,
            Scope::Status => Some("status"),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub field_manager: Option<String>,
    pub dry_run: bool,
    pub force: bool,
}

#[derive(Debug, Clone)]
pub enum PatchBody {
    Merge(Value),
    Json(Value),
    Apply(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

/// What a watch starts with: the events to send first, then live changes.
pub struct WatchStart {
    pub initial: Vec<(&'static str, Value)>,
    pub live: broadcast::Receiver<Arc<Change>>,
    pub resource_version: u64,
    /// Changes when open watches must end with 410 Gone (`Store::expire_watches`).
    pub expired: watch::Receiver<u64>,
}

/// Which objects a list or watch selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    fn matches_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The watch event type a change produces for this filter, if any.
    pub fn event_for(&self, rt: &ResourceType, change: &Change) -> Option<(&'static str, Value)> {
        if change.rt != rt || !self.matches_namespace(&change.namespace) {
            return None;
        }
        let now = self.matches(&change.object);
        let before = change.previous.as_ref().is_some_and(|p| self.matches(p));
        let kind = match (change.kind, before, now) {
            (ChangeKind::Added, _, true) => "ADDED",
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Modified, false, true) => "ADDED",
            (ChangeKind::Modified, true, false) => "DELETED",
            (ChangeKind::Deleted, _, true) => "DELETED",
            _ => return None,
        };
        Some((kind, change.object.clone()))
    }
}

struct State {
    objects: BTreeMap<ObjectKey, Value>,
    resource_version: u64,
    history: VecDeque<Arc<Change>>,
    /// Changes at or below this resource version are gone from the history.
    compacted_through: u64,
    next_cluster_ip: u32,
    changes: broadcast::Sender<Arc<Change>>,
    /// Bumped by `expire_watches`: every open watch ends with 410 Gone.
    expiry: watch::Sender<u64>,
}

pub struct Store {
    state: Mutex<State>,
}

impl Default for Store {
    fn default() -> Self {
        let (changes, _) = broadcast::channel(4096);
        Store {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                resource_version: 1,
                history: VecDeque::new(),
                compacted_through: 1,
                next_cluster_ip: 10,
                changes,
                expiry: watch::Sender::new(0),
            }),
        }
    }
}

fn key(rt: &'static ResourceType, namespace: &str, name: &str) -> ObjectKey {
    let namespace = if rt.namespaced { namespace } else { "" };
    (rt.group, rt.plural, namespace.to_string(), name.to_string())
}

fn text<'v>(object: &'v Value, pointer: &str) -> Option<&'v str> {
    object.pointer(pointer).and_then(Value::as_str)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn new_uid() -> String {
    let hex = format!("{:032x}", rand::random::<u128>());
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn metadata_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(meta)) => meta,
        _ => unreachable!("metadata was made an object above"),
    }
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not poison the server for the others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn current_resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// Forgets the change history, like etcd compaction: older watches get 410 Gone.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.compacted_through = state.resource_version;
    }

    /// Compaction that also ends every open watch with 410 Gone, as after etcd
    /// compaction or a watch cache that fell behind: clients must list again.
    /// The resource version moves on (etcd's is global: other writes happen),
    /// so even a watch that saw the newest change cannot resume.
    pub fn expire_watches(&self) {
        let mut state = self.lock();
        state.resource_version += 1;
        state.history.clear();
        state.compacted_through = state.resource_version;
        state.expiry.send_modify(|generation| *generation += 1);
    }

    pub fn get(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.lock()
            .objects
            .get(&key(rt, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// One page of the matching objects sorted by namespace and name (`start`
    /// matches skipped, at most `limit` returned), the number of matches, and the
    /// list resource version. Only the page is cloned: a paged list of thousands
    /// of objects would otherwise copy every object once per page.
    pub fn list(
        &self,
        rt: &'static ResourceType,
        filter: &Filter,
        start: usize,
        limit: usize,
    ) -> (Vec<Value>, usize, u64) {
        let state = self.lock();
        let mut total = 0;
        let mut page = Vec::new();
        let matching = state
            .objects
            .iter()
            .filter(|((group, plural, ns, _), object)| {
                *group == rt.group
                    && *plural == rt.plural
                    && filter.matches_namespace(ns)
                    && filter.matches(object)
            });
        for (_, object) in matching {
            if total >= start && page.len() < limit {
                page.push(object.clone());
            }
            total += 1;
        }
        (page, total, state.resource_version)
    }

    pub fn all_objects(&self) -> Vec<Value> {
        self.lock().objects.values().cloned().collect()
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.lock().changes.subscribe()
    }

    pub fn watch(
        &self,
        rt: &'static ResourceType,
        filter: &Filter,
        from: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let state = self.lock();
        let live = state.changes.subscribe();
        let initial = match from {
            // No resource version (or 0): start with the current state as ADDED events.
            None | Some(0) => state
                .objects
                .iter()
                .filter(|((group, plural, ns, _), object)| {
                    *group == rt.group
                        && *plural == rt.plural
                        && filter.matches_namespace(ns)
                        && filter.matches(object)
                })
                .map(|(_, object)| ("ADDED", object.clone()))
                .collect(),
            Some(version) if version < state.compacted_through => {
                return Err(ApiError::gone(format!(
                    "too old resource version: {version} ({})",
                    state.compacted_through
                )));
            }
            Some(version) => state
                .history
                .iter()
                .filter(|change| change.resource_version > version)
                .filter_map(|change| filter.event_for(rt, change))
                .collect(),
        };
        let mut expired = state.expiry.subscribe();
        expired.mark_unchanged();
        Ok(WatchStart {
            initial,
            live,
            resource_version: state.resource_version,
            expired,
        })
    }

    pub fn create(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        mut body: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type(rt, &body)?;
        if rt.namespaced {
            check_namespace(&body, namespace)?;
        }
        let meta = metadata_mut(&mut body);
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        {
            let suffix: String = (0..5)
                .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::random_range(0..27)]))
                .collect();
            meta.insert("name".into(), json!(format!("{prefix}{suffix}")));
        }
        let name = text(&body, "/metadata/name")
            .unwrap_or_default()
            .to_string();
        let mut state = self.lock();
        if state.objects.contains_key(&key(rt, namespace, &name)) {
            return Err(ApiError::already_exists(rt, &name));
        }
        let (object, _) =
            state.write(rt, namespace, &name, None, body, Scope::Main, options, None)?;
        Ok(object)
    }

    pub fn replace(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
        body: Value,
        scope: Scope,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type(rt, &body)?;
        check_name(&body, name)?;
        if rt.namespaced {
            check_namespace(&body, namespace)?;
        }
        let mut state = self.lock();
        let old = state.existing(rt, namespace, name)?;
        let (object, _) =
            state.write(rt, namespace, name, Some(old), body, scope, options, None)?;
        Ok(object)
    }

    /// Returns the object and whether the patch created it (apply only).
    pub fn patch(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
        body: PatchBody,
        scope: Scope,
        options: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let mut state = self.lock();
        match body {
            PatchBody::Merge(patch_body) => {
                let old = state.existing(rt, namespace, name)?;
                let mut target = old.clone();
                patch::merge_patch(&mut target, &patch_body);
                check_name(&target, name)?;
                state.write(rt, namespace, name, Some(old), target, scope, options, None)
            }
            PatchBody::Json(operations) => {
                let old = state.existing(rt, namespace, name)?;
                let mut target = old.clone();
                patch::json_patch(&mut target, &operations)
                    .map_err(|why| ApiError::invalid(rt, name, format!("json patch: {why}")))?;
                check_name(&target, name)?;
                state.write(rt, namespace, name, Some(old), target, scope, options, None)
            }
            PatchBody::Apply(applied) => state.apply(rt, namespace, name, applied, scope, options),
        }
    }

    pub fn delete(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let old = state.existing(rt, namespace, name)?;
        let uid = text(&old, "/metadata/uid").unwrap_or_default().to_string();
        if let Some(expected) = &options.precondition_uid
            && *expected != uid
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {expected}, UID in object meta: {uid}"
                ),
            ));
        }
        let actual = text(&old, "/metadata/resourceVersion")
            .unwrap_or_default()
            .to_string();
        if let Some(expected) = &options.precondition_resource_version
            && *expected != actual
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {expected}, ResourceVersion in object meta: {actual}"
                ),
            ));
        }
        if options.dry_run {
            return Ok(old);
        }
        let deleted = state.remove(&key(rt, namespace, name));
        if rt.kind == "Namespace" && rt.group.is_empty() {
            // Namespace deletion takes everything in it along.
            let inside: Vec<ObjectKey> = state
                .objects
                .keys()
                .filter(|k| k.2 == name)
                .cloned()
                .collect();
            for k in inside {
                state.remove(&k);
            }
        }
        if options.propagation == Propagation::Orphan {
            state.orphan_dependents(&uid);
        }
        state.collect_garbage();
        Ok(deleted.unwrap_or(old))
    }
}

/// Everything outside `metadata` and `status`: what `generation` tracks.
fn desired_state(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Value::Object(map) = &mut copy {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

impl State {
    fn existing(
        &self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&key(rt, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Server-side apply as a full replacement of the manager's fields.
    fn apply(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
        mut applied: Value,
        scope: Scope,
        options: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let manager = options.field_manager.clone().ok_or_else(|| {
            ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
            )
        })?;
        if text(&applied, "/apiVersion").is_none() || text(&applied, "/kind").is_none() {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in an applied configuration",
            ));
        }
        check_type(rt, &applied)?;
        check_name(&applied, name)?;
        if rt.namespaced {
            check_namespace(&applied, namespace)?;
        }
        let old = self.objects.get(&key(rt, namespace, name)).cloned();
        if old.is_none() && scope == Scope::Status {
            return Err(ApiError::not_found(rt, name));
        }
        if rt.has_status
            && let Value::Object(map) = &mut applied
        {
            match scope {
                Scope::Main => {
                    map.remove("status");
                }
                // Only status is written through /status; labels there would be ignored.
                Scope::Status => {
                    map.retain(|k, _| matches!(k.as_str(), "status" | "apiVersion" | "kind"))
                }
            }
        }
        let precondition = text(&applied, "/metadata/resourceVersion").map(str::to_string);
        let base = old.clone().unwrap_or_else(|| {
            json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name, "namespace": namespace}})
        });
        let applied_fields = fields::leaf_paths(&applied);
        let subresource = scope.subresource();
        let mut entries = fields::read_managed(&base);

        let mut conflicts = Vec::new();
        for entry in entries
            .iter_mut()
            .filter(|e| !e.is(&manager, "Apply", subresource))
        {
            let clashing: Vec<_> = entry
                .fields
                .intersection(&applied_fields)
                .filter(|p| fields::get(&base, p) != fields::get(&applied, p))
                .cloned()
                .collect();
            for path in clashing {
                let using = if entry.operation == "Update" {
                    format!(" using {}", entry.api_version)
                } else {
                    String::new()
                };
                conflicts.push(format!(
                    "conflict with \"{}\"{using}: {}",
                    entry.manager,
                    fields::dotted(&path)
                ));
                // Forcing takes the field away from its previous owner.
                entry.fields.remove(&path);
            }
        }
        if !conflicts.is_empty() && !options.force {
            return Err(ApiError::apply_conflict(rt, name, &conflicts));
        }

        let others: FieldSet = entries
            .iter()
            .filter(|e| !e.is(&manager, "Apply", subresource))
            .flat_map(|e| e.fields.iter().cloned())
            .collect();
        let position = entries
            .iter()
            .position(|e| e.is(&manager, "Apply", subresource));
        let previous = position
            .map(|i| entries[i].fields.clone())
            .unwrap_or_default();

        let mut merged = base;
        for dropped in previous.difference(&applied_fields) {
            if !others.contains(dropped) {
                fields::remove(&mut merged, dropped);
            }
        }
        for path in &applied_fields {
            if let Some(value) = fields::get(&applied, path) {
                fields::set(&mut merged, path, value);
            }
        }
        if let Some(version) = precondition {
            metadata_mut(&mut merged).insert("resourceVersion".into(), json!(version));
        }
        match position {
            Some(i) => entries[i].fields = applied_fields,
            None => entries.push(ManagedEntry {
                manager: manager.clone(),
                operation: "Apply".into(),
                subresource: subresource.map(str::to_string),
                api_version: rt.api_version(),
                time: None,
                fields: applied_fields,
            }),
        }
        self.write(
            rt,
            namespace,
            name,
            old,
            merged,
            scope,
            options,
            Some(entries),
        )
    }

    /// The common write path. `entries` is the managed-fields result of an
    /// apply; `None` means an update whose changed fields go to the manager.
    /// Returns the stored object and whether it was created.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
        old: Option<Value>,
        mut new: Value,
        scope: Scope,
        options: &WriteOptions,
        entries: Option<Vec<ManagedEntry>>,
    ) -> Result<(Value, bool), ApiError> {
        let manager = options
            .field_manager
            .clone()
            .unwrap_or_else(|| "unknown".into());
        let operation = if entries.is_some() { "Apply" } else { "Update" };
        let subresource = scope.subresource();
        if let Value::Object(map) = &mut new {
            map.insert("apiVersion".into(), json!(rt.api_version()));
            map.insert("kind".into(), json!(rt.kind));
        }
        let precondition = text(&new, "/metadata/resourceVersion").map(str::to_string);
        {
            let meta = metadata_mut(&mut new);
            meta.insert("name".into(), json!(name));
            if rt.namespaced {
                meta.insert("namespace".into(), json!(namespace));
            } else {
                meta.remove("namespace");
            }
            for server_owned in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
            ] {
                meta.remove(server_owned);
            }
        }
        match &old {
            None => {
                validate_name(rt.name_rule(), name)
                    .map_err(|cause| ApiError::invalid(rt, name, cause))?;
                if rt.namespaced
                    && !self
                        .objects
                        .contains_key(&key(resources::namespace_type(), "", namespace))
                {
                    return Err(ApiError::namespace_not_found(namespace));
                }
                if rt.has_status
                    && let Value::Object(map) = &mut new
                {
                    map.remove("status");
                }
                if rt.kind == "Service" && rt.group.is_empty() {
                    self.assign_cluster_ip(&mut new);
                }
                let meta = metadata_mut(&mut new);
                meta.insert("uid".into(), json!(new_uid()));
                meta.insert("creationTimestamp".into(), json!(now()));
                meta.insert("generation".into(), json!(1));
            }
            Some(old) => {
                let current = text(old, "/metadata/resourceVersion").unwrap_or_default();
                if precondition
                    .as_deref()
                    .is_some_and(|p| !p.is_empty() && p != current)
                {
                    return Err(ApiError::conflict(
                        rt,
                        name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                if rt.has_status {
                    new = match scope {
                        // Main writes cannot touch status ...
                        Scope::Main => {
                            let mut kept = new;
                            match old.get("status") {
                                Some(status) => kept["status"] = status.clone(),
                                None => {
                                    if let Value::Object(map) = &mut kept {
                                        map.remove("status");
                                    }
                                }
                            }
                            kept
                        }
                        // ... and status writes touch nothing else.
                        Scope::Status => {
                            let mut kept = old.clone();
                            match new.get("status") {
                                Some(status) => kept["status"] = status.clone(),
                                None => {
                                    if let Value::Object(map) = &mut kept {
                                        map.remove("status");
                                    }
                                }
                            }
                            metadata_mut(&mut kept).remove("managedFields");
                            kept
                        }
                    };
                }
                if rt.kind == "Service" && rt.group.is_empty() {
                    carry_cluster_ip(old, &mut new);
                }
                check_immutable(rt, old, &new)
                    .map_err(|cause| ApiError::invalid(rt, name, cause))?;
                let old_meta = old.get("metadata").cloned().unwrap_or_default();
                let meta = metadata_mut(&mut new);
                for server_owned in ["uid", "creationTimestamp", "generation"] {
                    if let Some(value) = old_meta.get(server_owned) {
                        meta.insert(server_owned.into(), value.clone());
                    }
                }
                if desired_state(old) != desired_state(&new) {
                    let generation = old_meta
                        .get("generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    metadata_mut(&mut new).insert("generation".into(), json!(generation + 1));
                }
            }
        }

        check_selector_matches_template(rt, &new)
            .map_err(|cause| ApiError::invalid(rt, name, cause))?;
        check_pod_template(rt, &new).map_err(|cause| ApiError::invalid(rt, name, cause))?;
        let mut entries = match entries {
            Some(entries) => entries,
            None => {
                let before = old.clone().unwrap_or_else(|| json!({}));
                let (changed, removed) = fields::diff(&before, &new);
                let mut entries = fields::read_managed(&before);
                for entry in &mut entries {
                    entry.fields.retain(|p| !removed.contains(p));
                    if !entry.is(&manager, "Update", subresource) {
                        entry.fields.retain(|p| !changed.contains(p));
                    }
                }
                match entries
                    .iter()
                    .position(|e| e.is(&manager, "Update", subresource))
                {
                    Some(i) => entries[i].fields.extend(changed),
                    None => entries.push(ManagedEntry {
                        manager: manager.clone(),
                        operation: "Update".into(),
                        subresource: subresource.map(str::to_string),
                        api_version: rt.api_version(),
                        time: None,
                        fields: changed,
                    }),
                }
                entries
            }
        };
        entries.retain(|e| !e.fields.is_empty());
        fields::write_managed(&mut new, &entries);

        if let Some(old) = &old {
            let mut unchanged = new.clone();
            if let Some(version) = old.pointer("/metadata/resourceVersion") {
                metadata_mut(&mut unchanged).insert("resourceVersion".into(), version.clone());
            }
            keep_times(old, &mut unchanged);
            if &unchanged == old {
                // A real server skips no-op writes: same resourceVersion, no event.
                return Ok((old.clone(), false));
            }
        }
        let timestamp = now();
        for entry in entries
            .iter_mut()
            .filter(|e| e.is(&manager, operation, subresource))
        {
            entry.time = Some(timestamp.clone());
        }
        if let Some(old) = &old {
            keep_other_times(old, &mut entries, &manager, operation, subresource);
        }
        fields::write_managed(&mut new, &entries);
        if options.dry_run {
            return Ok((new, old.is_none()));
        }
        let kind = if old.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        let stored = self.record(rt, namespace, kind, old.clone(), new);
        self.objects
            .insert(key(rt, namespace, name), stored.clone());
        Ok((stored, old.is_none()))
    }

    fn assign_cluster_ip(&mut self, service: &mut Value) {
        let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
            return;
        }
        let requested = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ip = if requested.is_empty() {
            self.next_cluster_ip += 1;
            format!(
                "10.96.{}.{}",
                self.next_cluster_ip / 256,
                self.next_cluster_ip % 256
            )
        } else {
            requested
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
    }

    /// Bumps the global resource version, stamps it on the object and tells watches.
    fn record(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        kind: ChangeKind,
        previous: Option<Value>,
        mut object: Value,
    ) -> Value {
        self.resource_version += 1;
        metadata_mut(&mut object).insert(
            "resourceVersion".into(),
            json!(self.resource_version.to_string()),
        );
        let change = Arc::new(Change {
            resource_version: self.resource_version,
            rt,
            namespace: if rt.namespaced {
                namespace.to_string()
            } else {
                String::new()
            },
            kind,
            previous,
            object: object.clone(),
        });
        self.history.push_back(change.clone());
        while self.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_through = dropped.resource_version;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(change);
        object
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Value> {
        let object = self.objects.remove(key)?;
        let rt = resources::RESOURCES
            .iter()
            .find(|r| r.group == key.0 && r.plural == key.1)?;
        Some(self.record(rt, &key.2, ChangeKind::Deleted, None, object))
    }

    fn orphan_dependents(&mut self, owner_uid: &str) {
        let dependents: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(_, o)| owner_uids(o).contains(owner_uid))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dependents {
            let Some(old) = self.objects.get(&k).cloned() else {
                continue;
            };
            let Some(rt) = resources::RESOURCES
                .iter()
                .find(|r| r.group == k.0 && r.plural == k.1)
            else {
                continue;
            };
            let mut new = old.clone();
            if let Some(Value::Array(refs)) = new.pointer_mut("/metadata/ownerReferences") {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            let stored = self.record(rt, &k.2, ChangeKind::Modified, Some(old), new);
            self.objects.insert(k, stored);
        }
    }

    /// Deletes objects all of whose owners are gone, repeatedly, as the garbage collector would.
    fn collect_garbage(&mut self) {
        loop {
            let live: BTreeSet<String> = self
                .objects
                .values()
                .filter_map(|o| text(o, "/metadata/uid").map(str::to_string))
                .collect();
            let orphans: Vec<ObjectKey> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    let owners = owner_uids(o);
                    !owners.is_empty() && owners.iter().all(|uid| !live.contains(uid))
                })
                .map(|(k, _)| k.clone())
                .collect();
            if orphans.is_empty() {
                return;
            }
            for k in orphans {
                self.remove(&k);
            }
        }
    }
}

fn owner_uids(object: &Value) -> BTreeSet<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// An update that leaves `spec.clusterIP` empty keeps the allocated one, as the real server does.
fn carry_cluster_ip(old: &Value, new: &mut Value) {
    let empty = text(new, "/spec/clusterIP").is_none_or(str::is_empty);
    if !empty {
        return;
    }
    if let (Some(ip), Some(spec)) = (
        old.pointer("/spec/clusterIP"),
        new.get_mut("spec").and_then(Value::as_object_mut),
    ) {
        spec.insert("clusterIP".into(), ip.clone());
        if let Some(ips) = old.pointer("/spec/clusterIPs") {
            spec.insert("clusterIPs".into(), ips.clone());
        }
    }
}

/// Copies the old entries' times onto `object`, so a no-op write compares equal.
fn keep_times(old: &Value, object: &mut Value) {
    let old_entries = fields::read_managed(old);
    let mut entries = fields::read_managed(object);
    for entry in &mut entries {
        entry.time = old_entries
            .iter()
            .find(|o| {
                o.is(
                    &entry.manager,
                    &entry.operation,
                    entry.subresource.as_deref(),
                )
            })
            .and_then(|o| o.time.clone());
    }
    fields::write_managed(object, &entries);
}

fn keep_other_times(
    old: &Value,
    entries: &mut [ManagedEntry],
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
) {
    let old_entries = fields::read_managed(old);
    for entry in entries
        .iter_mut()
        .filter(|e| !e.is(manager, operation, subresource))
    {
        if let Some(previous) = old_entries.iter().find(|o| {
            o.is(
                &entry.manager,
                &entry.operation,
                entry.subresource.as_deref(),
            )
        }) {
            entry.time = previous.time.clone();
        }
    }
}
