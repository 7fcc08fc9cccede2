//! With `--shards`, the replica that runs a repository's Git → Stack sync is
//! often not the holder of a stack's shard, the one that writes its status. A
//! Stack write the API server refused (422, 403, ...) reaches that holder as
//! a Warning Event `StackRefused` on the Stack, which its object-Events watch
//! reads: its controller writes the failure into the Stack's status
//! (`Ready=False`, `ApplyFailed`), and every replica's page and API, and the
//! holder's metrics, Events and notifications, follow from there. The refusal
//! holds while the Stack stays at the revision stored when it was refused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Resource};

use crate::crd::{FIELD_MANAGER, Stack};
use crate::reason::Reason;
use crate::reconcile::source::RefusedStack;
use crate::reconcile::status::Failure;
use crate::reconcile::{GitFailure, GitFailures};

/// The Event's reason: stable, for the holder and for people (`kubectl events`).
pub const REASON: &str = "StackRefused";
/// The commit whose Stack was refused.
const REVISION_ANNOTATION: &str = "stackd.dev/revision";
/// The revision the Stack stays at (its spec as last stored).
const STORED_ANNOTATION: &str = "stackd.dev/stored-revision";

/// The Event telling the holder of `refused`'s shard; `None` when there is
/// no Stack to attach it to (its first write was refused).
pub fn event(refused: &RefusedStack, commit: &str, identity: &str) -> Option<Event> {
    let stored = refused.stored_revision.clone()?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let annotations = BTreeMap::from([
        (REVISION_ANNOTATION.to_string(), commit.to_string()),
        (STORED_ANNOTATION.to_string(), stored),
    ]);
    Some(Event {
        metadata: ObjectMeta {
            // Within the 253 characters of a name, whatever the stack's.
            name: Some(format!(
                "{}.refused.{:x}",
                refused.name.get(..200).unwrap_or(&refused.name),
                now.as_nanosecond()
            )),
            namespace: Some(refused.namespace.clone()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Warning".into()),
        reason: Some(REASON.into()),
        action: Some("Store".into()),
        note: Some(refused.message.chars().take(1000).collect()),
        regarding: Some(ObjectReference {
            api_version: Some(Stack::api_version(&()).into_owned()),
            kind: Some(Stack::kind(&()).into_owned()),
            namespace: Some(refused.namespace.clone()),
            name: Some(refused.name.clone()),
            ..ObjectReference::default()
        }),
        reporting_controller: Some(FIELD_MANAGER.into()),
        reporting_instance: Some(identity.into()),
        ..Event::default()
    })
}

/// Publishes the Event of a refused Stack write (see [`event`]).
pub async fn publish(
    client: &Client,
    refused: &RefusedStack,
    commit: &str,
    identity: &str,
) -> Result<(), kube::Error> {
    let Some(event) = event(refused, commit, identity) else {
        return Ok(());
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &refused.namespace);
    api.create(&PostParams::default(), &event).await.map(|_| ())
}

/// Records the refusal an Event tells, unless this replica published it (it
/// knows already); returns whether the Event was one.
pub fn record(event: &Event, identity: &str, failures: &GitFailures) -> bool {
    let Some((namespace, name, failure)) = failure_of(event, identity) else {
        return false;
    };
    failures.set_stack(&namespace, &name, failure);
    true
}

/// The stack and failure of a `StackRefused` Event another replica published.
fn failure_of(event: &Event, identity: &str) -> Option<(String, String, GitFailure)> {
    if event.reason.as_deref() != Some(REASON)
        || event.reporting_instance.as_deref() == Some(identity)
    {
        return None;
    }
    let regarding = event.regarding.as_ref()?;
    if regarding.kind.as_deref() != Some(Stack::kind(&()).as_ref()) {
        return None;
    }
    let annotations = event.metadata.annotations.as_ref()?;
    let failure = GitFailure {
        revision: Some(annotations.get(REVISION_ANNOTATION)?.clone()),
        failure: Failure::new(
            Reason::ApplyFailed,
            event.note.clone().unwrap_or_default(),
            false,
        ),
        while_at: Some(annotations.get(STORED_ANNOTATION)?.clone()),
    };
    Some((
        regarding.namespace.clone()?,
        regarding.name.clone()?,
        failure,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> RefusedStack {
        RefusedStack {
            namespace: "shop".into(),
            name: "shop".into(),
            message: "apply Stack shop/shop: 422 Invalid: spec.project: too long".into(),
            transient: false,
            reason: Reason::ApplyFailed,
            stored_revision: Some("aaa".into()),
        }
    }

    #[test]
    fn the_holder_reads_the_refusal_another_replica_published() {
        let event = event(&refused(), "bbb", "r1").unwrap();
        // The replica that published it knows already.
        assert_eq!(failure_of(&event, "r1"), None);
        let (namespace, name, failure) = failure_of(&event, "r2").unwrap();
        assert_eq!((namespace.as_str(), name.as_str()), ("shop", "shop"));
        assert_eq!(failure.revision.as_deref(), Some("bbb"));
        assert_eq!(failure.while_at.as_deref(), Some("aaa"));
        assert_eq!(failure.failure.reason, Reason::ApplyFailed);
        assert_eq!(failure.failure.message, refused().message);

        let failures = GitFailures::new();
        assert!(record(&event, "r2", &failures));
        assert_eq!(failures.for_stack("shop", "shop", None), Some(failure));
        // A new commit that renders does not clear it: only a stored Stack does.
        failures.clear_stack("shop", "shop");
        assert!(failures.for_stack("shop", "shop", None).is_some());
    }

    #[test]
    fn a_first_write_refused_has_no_stack_to_tell_and_other_events_are_left_alone() {
        let first = RefusedStack {
            stored_revision: None,
            ..refused()
        };
        assert_eq!(event(&first, "bbb", "r1"), None);
        let mut other = event(&refused(), "bbb", "r1").unwrap();
        other.reason = Some("ApplyFailed".into());
        assert!(!record(&other, "r2", &GitFailures::new()));
    }
}
