//! The Events of a stack's objects (a Deployment scaling, a Job failing), for
//! the page and the JSON API: one watch of `events.k8s.io/v1` Events that keeps
//! no store. Each Event is matched to its stack through the reflector stores
//! (the object's `stackd.dev/stack` label) and the stack's inventory, and only
//! the last [`EVENTS_KEPT`](crate::state::EVENTS_KEPT) per stack are kept, in
//! its view. A page view costs no request, and memory stays at 20 Events a
//! stack however busy the cluster is.

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::reconcile::GitFailures;
use crate::reconcile::live::LiveStores;
use crate::state::{EventView, SharedState};

/// Watches every Event until dropped (the controller aborts it when it stops).
/// Errors are logged; the watch backs off and lists again on its own. With
/// `refusals` (`--shards`: the failures and this replica's identity), the
/// Stack writes other replicas saw refused are recorded too (see
/// [`refusals`](crate::reconcile::refusals)).
pub async fn watch(
    client: Client,
    live: LiveStores,
    state: SharedState,
    refusals: Option<(GitFailures, String)>,
) {
    // Until the stores have listed, no Event could be matched to its stack.
    while !live.listed() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let events = watcher(Api::<Event>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    events
        .for_each(|event| {
            match event {
                Ok(watcher::Event::Apply(event) | watcher::Event::InitApply(event)) => {
                    let refusal = refusals.as_ref().is_some_and(|(failures, identity)| {
                        crate::reconcile::refusals::record(&event, identity, failures)
                    });
                    if !refusal {
                        record(&event, &live, &state);
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "watching Events; retrying"),
            }
            futures::future::ready(())
        })
        .await;
}

/// Adds `event` to its stack's view when it is about an object of that
/// stack's inventory; returns whether it did. Events about the Stack itself
/// are left out: stackd adds those it publishes as it publishes them.
pub fn record(event: &Event, live: &LiveStores, state: &SharedState) -> bool {
    let Some(regarding) = event.regarding.as_ref() else {
        return false;
    };
    let (Some(kind), Some(name)) = (regarding.kind.as_deref(), regarding.name.as_deref()) else {
        return false;
    };
    let namespace = regarding
        .namespace
        .as_deref()
        .or(event.metadata.namespace.as_deref())
        .unwrap_or_default();
    let Some(stack) = live.stack_of(kind, namespace, name) else {
        return false;
    };
    // Kept only for an object of the stack's inventory, in its namespace: a
    // label copied onto a stranger does not bring its Events in.
    state.add_object_event(namespace, &stack, view_of(event, kind, name))
}

/// The page's form of an Event: its latest time (a repeated Event's series
/// goes on), type, reason and note, and the object it is about.
fn view_of(event: &Event, kind: &str, name: &str) -> EventView {
    let micro = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime| t.0;
    let plain = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| t.0;
    let latest = [
        event.series.as_ref().map(|s| micro(&s.last_observed_time)),
        event.event_time.as_ref().map(micro),
        event.deprecated_last_timestamp.as_ref().map(plain),
        event.metadata.creation_timestamp.as_ref().map(plain),
    ]
    .into_iter()
    .flatten()
    .max();
    let time = latest
        .and_then(|t| {
            let nanos = u32::try_from(t.subsec_nanosecond()).unwrap_or(0);
            chrono::DateTime::from_timestamp(t.as_second(), nanos)
        })
        .unwrap_or_else(chrono::Utc::now);
    EventView {
        time,
        kind: event.type_.clone().unwrap_or_else(|| "Normal".into()),
        reason: event.reason.clone().unwrap_or_default(),
        note: event.note.clone().unwrap_or_default(),
        object: Some(format!("{kind}/{name}")),
        id: Some(format!(
            "{}/{}",
            event.metadata.namespace.as_deref().unwrap_or_default(),
            event.metadata.name.as_deref().unwrap_or_default()
        )),
    }
}
