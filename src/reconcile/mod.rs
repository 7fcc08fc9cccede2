//! Reconciler: Stacks from Git, objects from Stacks, prune, self-heal, status.

pub mod apply;
pub mod health;
