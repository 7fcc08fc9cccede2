//! Reconciler: Stacks from Git, objects from Stacks, prune, self-heal, status.

pub mod apply;
pub mod caches;
pub mod compact;
pub mod controller;
pub mod drift;
pub mod error;
pub mod failures;
pub mod health;
pub mod impersonate;
pub mod leader;
pub mod live;
pub mod object_cache;
pub mod object_events;
pub mod offline;
pub mod peers;
pub mod recorder;
pub mod refusals;
pub mod rollout;
pub mod secrets;
pub mod shards;
pub mod source;
pub mod status;
pub mod waves;

pub use caches::{CacheState, CacheSync};
pub use controller::{ControllerHandles, ControllerOptions, RevisionLoader, run};
pub use error::ReconcileError;
pub use failures::{GitFailure, GitFailures};
pub use secrets::SecretStore;
pub use source::{DesiredStack, SyncPolicy, SyncReport, sync_repository};
