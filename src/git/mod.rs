//! Git source: mirrored fetch, stack discovery, webhooks and local watch.
//!
//! Flow of one poll ([`poll::poll_repository`], blocking, run in `spawn_blocking`):
//! open the bare mirror for the URL ([`mirror`], rebuilt after an interrupted
//! fetch) → ask the remote for the ref's commit ([`remote`], ls-remote) → fetch
//! that single ref only when the commit is new (shallow on the first fetch) →
//! read the commit's tree without checkout ([`tree::GitTreeSource`]) → find the
//! stacks ([`discovery`]). [`source`] runs one such loop per repository on tokio,
//! publishes [`source::RepositoryState`] and sends [`source::SourceEvent`]s;
//! [`webhook`] and [`watch`] trigger polls early. URLs are shown only through
//! [`redact`]. Network operations run in a killable child process ([`worker`]),
//! bounded by the repository's `timeout`.

pub mod discovery;
pub mod error;
pub mod mirror;
pub mod poll;
pub mod redact;
pub mod remote;
pub mod settings;
pub mod source;
pub mod tree;
pub mod verify;
pub mod watch;
pub mod webhook;
pub mod worker;

pub use discovery::{DiscoveredStack, DiscoveryError, discover};
pub use error::GitError;
pub use redact::redact_url;
pub use settings::{Auth, RepoSettings};
pub use source::{
    RepositoryState, RepositoryUpdate, Source, SourceEvent, SourceHandle, SourceOptions,
};
pub use tree::GitTreeSource;
