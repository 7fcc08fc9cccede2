//! stackd: a GitOps reconciler for docker-compose stacks on Kubernetes.
//!
//! Data flows one way: git mirror → checkout at a commit → discover stacks →
//! parse and interpolate compose → `Stack` → Kubernetes objects → server-side
//! apply → prune → health → status. The middle (`render`) is pure.

pub mod config;
pub mod crd;
pub mod daemon;
pub mod deflate;
pub mod diff;
pub mod field_diff;
pub mod git;
pub mod http;
pub mod local;
pub mod metrics;
pub mod notify;
pub mod reason;
pub mod reconcile;
pub mod render;
pub mod shard;
pub mod state;
pub mod tenancy;
