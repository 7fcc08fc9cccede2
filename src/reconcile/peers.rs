//! With `--shards`: every replica's page and `/api/v1/stacks` show every stack,
//! not only those of the shards it holds. One watch of all Stacks keeps no
//! store: each Stack is turned at once into the part of its view that its
//! status carries (compact text, see `SharedState::put_remote`) and dropped,
//! so this replica's memory grows by a few kB a stack, not by a second Stack
//! cache with its compose models. The holder of a stack's shard writes its
//! status, so every replica shows what `kubectl get stack -o yaml` says.

use std::collections::BTreeSet;

use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::crd::{Stack, StackStatus};
use crate::reconcile::status;
use crate::state::{SharedState, StackKey, StackView};

/// Watches every Stack until dropped. Errors are logged; the watch backs off
/// and lists again on its own.
pub async fn watch(client: Client, state: SharedState) {
    let stacks = watcher(Api::<Stack>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    // The Stacks seen by a (re-)list: those it did not return are gone.
    let mut listing: Option<BTreeSet<StackKey>> = None;
    stacks
        .for_each(|event| {
            match event {
                Ok(watcher::Event::Init) => listing = Some(BTreeSet::new()),
                Ok(watcher::Event::InitApply(stack)) => {
                    let view = view_of(&stack);
                    if let Some(seen) = listing.as_mut() {
                        seen.insert((view.namespace.clone(), view.name.clone()));
                    }
                    state.put_remote(&view);
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(seen) = listing.take() {
                        state.retain_remote(&seen);
                    }
                    let (stacks, bytes) = state.remote_size();
                    tracing::info!(stacks, bytes, "every Stack listed for the page");
                }
                Ok(watcher::Event::Apply(stack)) => state.put_remote(&view_of(&stack)),
                Ok(watcher::Event::Delete(stack)) => state.remove_remote(
                    stack.metadata.namespace.as_deref().unwrap_or_default(),
                    stack.metadata.name.as_deref().unwrap_or_default(),
                ),
                Err(error) => tracing::warn!(%error, "watching every Stack; retrying"),
            }
            futures::future::ready(())
        })
        .await;
}

/// The view the holder's controller would build from the Stack's status,
/// less what it keeps in memory only (the last plan, the last sync, Events).
pub fn view_of(stack: &Stack) -> StackView {
    let none = StackStatus::default();
    status::view(stack, stack.status.as_ref().unwrap_or(&none), None, None)
}
