//! Publishes `events.k8s.io/v1` Events about Stacks, with the series of
//! client-go's event recorder: the same Event again within six minutes
//! increments the first one's `series.count` rather than creating another.
//!
//! kube's `Recorder` does this too, but keeps a whole copy of every Event it
//! published in the last six minutes, and keyed by a reference that includes
//! the Stack's `resourceVersion`, which changes with every status write, so a
//! repeat never matched: at 1,000 stacks that was 6 MB of Events that were
//! never aggregated. Here a repeat is the same Stack (by uid), type, reason,
//! action and note, and each remembers only its Event's name and count.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

/// How long a published Event can be continued as a series (client-go's and kube's).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// How often Events older than the window are forgotten: not at every publish,
/// which would read every entry each time.
const FORGET_EVERY: Duration = Duration::from_secs(30);

/// One Event published in the window.
struct Published {
    /// Its object's name, to patch its series.
    name: String,
    count: i32,
    last: Instant,
}

#[derive(Default)]
struct Memory {
    published: HashMap<u64, Published>,
    forgotten_at: Option<Instant>,
}

pub struct Recorder {
    client: Client,
    reporter: Reporter,
    memory: Mutex<Memory>,
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorder {
            client,
            reporter,
            memory: Mutex::default(),
        }
    }

    /// Creates the Event, or continues the series of the same one published
    /// within the last six minutes.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Instant::now();
        let key = key(event, regarding);
        let repeat = {
            let mut memory = self.lock();
            memory.forget_old(now);
            memory
                .published
                .get(&key)
                .map(|p| (p.name.clone(), p.count + 1))
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let (name, count) = match repeat {
            Some((name, count)) => {
                let series = serde_json::json!({"series": EventSeries {
                    count,
                    last_observed_time: MicroTime(k8s_openapi::jiff::Timestamp::now()),
                }});
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                    .await?;
                (name, count)
            }
            None => {
                let created = events
                    .create(&PostParams::default(), &self.event(event, regarding))
                    .await?;
                (created.metadata.name.unwrap_or_default(), 1)
            }
        };
        let last = now;
        self.lock()
            .published
            .insert(key, Published { name, count, last });
        Ok(())
    }

    fn event(&self, event: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = k8s_openapi::jiff::Timestamp::now();
        let instance = self.reporter.instance.clone();
        K8sEvent {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                // As client-go names them: the object's name and the time.
                name: Some(format!(
                    "{}.{:x}",
                    regarding
                        .name
                        .as_deref()
                        .unwrap_or(&self.reporter.controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(type_name(event.type_).to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(instance.unwrap_or_else(|| self.reporter.controller.clone())),
            ..Default::default()
        }
    }

    // Plain data: a panicked writer leaves a usable value.
    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Memory {
    fn forget_old(&mut self, now: Instant) {
        if self
            .forgotten_at
            .is_some_and(|at| now.duration_since(at) < FORGET_EVERY)
        {
            return;
        }
        self.forgotten_at = Some(now);
        self.published
            .retain(|_, p| now.duration_since(p.last) < SERIES_WINDOW);
    }
}

fn type_name(type_: EventType) -> &'static str {
    match type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What makes an Event a repeat: its object (not its resourceVersion, which
/// every status write changes), type, reason, action, note and related object.
fn key(event: &Event, regarding: &ObjectReference) -> u64 {
    let mut hasher = DefaultHasher::new();
    let object = |o: &ObjectReference, hasher: &mut DefaultHasher| {
        (&o.api_version, &o.kind, &o.namespace, &o.name, &o.uid).hash(hasher);
    };
    object(regarding, &mut hasher);
    if let Some(related) = &event.secondary {
        object(related, &mut hasher);
    }
    (
        type_name(event.type_),
        &event.reason,
        &event.action,
        &event.note,
    )
        .hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(resource_version: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("stackd.dev/v1alpha1".into()),
            kind: Some("Stack".into()),
            namespace: Some("shop".into()),
            name: Some("shop".into()),
            uid: Some("u-1".into()),
            resource_version: Some(resource_version.into()),
            ..Default::default()
        }
    }

    fn applied(note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: "Applied".into(),
            note: Some(note.into()),
            action: "Apply".into(),
            secondary: None,
        }
    }

    #[test]
    fn a_repeat_is_the_same_event_about_the_same_stack_whatever_its_resource_version() {
        let first = key(&applied("created 1, updated 0"), &stack("1"));
        assert_eq!(first, key(&applied("created 1, updated 0"), &stack("2")));
        assert_ne!(first, key(&applied("created 0, updated 1"), &stack("2")));
        let mut other = stack("1");
        other.uid = Some("u-2".into());
        assert_ne!(first, key(&applied("created 1, updated 0"), &other));
        let mut warning = applied("created 1, updated 0");
        warning.type_ = EventType::Warning;
        assert_ne!(first, key(&warning, &stack("1")));
    }

    #[test]
    fn events_older_than_the_window_are_forgotten_at_most_every_half_minute() {
        let start = Instant::now();
        let mut memory = Memory::default();
        let old = Published {
            name: "a".into(),
            count: 1,
            last: start,
        };
        memory.published.insert(1, old);
        memory.forget_old(start);
        assert_eq!(memory.published.len(), 1);
        let later = start + SERIES_WINDOW;
        memory.forget_old(later);
        assert!(memory.published.is_empty());
    }
}
