//! Git source: mirrored fetch, stack discovery, webhooks and local watch.

pub mod discovery;
pub mod error;
pub mod mirror;
pub mod poll;
pub mod redact;
pub mod remote;
pub mod settings;
pub mod source;
pub mod tree;
pub mod watch;
pub mod webhook;

pub use discovery::{DiscoveredStack, DiscoveryError, discover};
pub use error::GitError;
pub use redact::redact_url;
pub use settings::{Auth, RepoSettings};
pub use source::{
    RepositoryState, RepositoryUpdate, Source, SourceEvent, SourceHandle, SourceOptions,
};
pub use tree::GitTreeSource;
