//! One poll of one repository, blocking: ask the remote for the ref's commit,
//! fetch only when it changed, then discover the stacks at that commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::{Oid, Repository};
use tokio_util::sync::CancellationToken;

use super::discovery::{DiscoveredStack, discover};
use super::error::GitError;
use super::mirror::{Mirror, Opened};
use super::remote::{FetchStats, RemoteContext, find_ref};
use super::settings::{RefSpec, RepoSettings};
use super::tree::GitTreeSource;
use crate::render::files::FileSource;

/// What a successful poll found.
pub struct PollOutcome {
    pub commit: Oid,
    /// The commit before this poll (in memory, or the mirror's ref after a restart).
    pub previous: Option<Oid>,
    /// `Some` when objects were fetched.
    pub fetched: Option<FetchStats>,
    /// The new commit does not descend from the previous one (history was rewritten).
    pub forced: bool,
    pub subject: String,
    pub opened: Opened,
    pub mirror_path: PathBuf,
    /// The stacks at `commit`; `None` when the commit is `last` (nothing to rediscover).
    pub stacks: Option<Vec<DiscoveredStack>>,
    pub reader: Arc<dyn FileSource>,
}

/// Polls `settings` once, with the mirror under `data_dir`. `last` is the commit
/// the previous poll in this process settled on.
pub fn poll_repository(
    settings: &RepoSettings,
    data_dir: &Path,
    last: Option<Oid>,
) -> Result<PollOutcome, GitError> {
    poll_repository_until(settings, data_dir, last, None)
}

/// [`poll_repository`], with network operations stopped when `cancel` fires.
pub fn poll_repository_until(
    settings: &RepoSettings,
    data_dir: &Path,
    last: Option<Oid>,
    cancel: Option<CancellationToken>,
) -> Result<PollOutcome, GitError> {
    let mut ctx = RemoteContext::new(settings);
    ctx.cancel = cancel;
    let at = &ctx.at;
    let git_err = |e: git2::Error| GitError::git(at, &settings.url, &e);
    let (mirror, opened) =
        Mirror::open(data_dir, &settings.url).map_err(|e| GitError::CorruptMirror {
            at: at.clone(),
            path: e.path,
            message: e.message,
        })?;
    let repo = mirror.repo();

    let (commit, previous, fetched) = match RefSpec::parse(&settings.git_ref) {
        RefSpec::Commit(oid) => {
            let local_ref = format!("refs/stackd/commits/{oid}");
            let fetched = if repo.find_commit(oid).is_ok() {
                None
            } else {
                Some(fetch_pinned(&ctx, &mirror, oid, &local_ref)?)
            };
            (oid, last, fetched)
        }
        RefSpec::Name(name) => {
            let local_ref = local_ref_for(&name);
            let local_before = peeled(repo, &local_ref);
            let previous = last.or(local_before);
            let advert = ctx.ls_remote(repo)?;
            let Some((remote_ref, oid)) = find_ref(&advert, &RefSpec::candidates(&name)) else {
                return Err(GitError::RefNotFound {
                    at: at.clone(),
                    last_good: previous.map(|c| c.to_string()),
                });
            };
            let fetched = if repo.find_commit(oid).is_ok() {
                // Already here (unchanged, or moved back to a known commit): no transfer.
                if local_before != Some(oid) {
                    repo.reference(&local_ref, oid, true, "stackd: ref moved to a known commit")
                        .map_err(git_err)?;
                }
                None
            } else {
                // Only a first fetch is shallow: later ones are incremental from the
                // commit we have, which keeps the history that force-push detection needs.
                let refspec = format!("+{remote_ref}:{local_ref}");
                Some(fetch_guarded(
                    &ctx,
                    &mirror,
                    &[refspec],
                    local_before.is_none(),
                )?)
            };
            // The ref may have moved between the advertisement and the fetch.
            let commit = peeled(repo, &local_ref).unwrap_or(oid);
            (commit, previous, fetched)
        }
    };

    let found = repo
        .find_commit(commit)
        .map_err(|_| GitError::CommitNotFound {
            at: at.clone(),
            commit: commit.to_string(),
        })?;
    // Before any tree of the commit is read: an unverified commit is never loaded.
    if let Some(verify) = &settings.verify {
        super::verify::verify_commit(repo, commit, verify).map_err(|failure| {
            GitError::Unverified {
                at: at.clone(),
                commit: commit.to_string(),
                signer: failure.signer,
                reason: failure.refusal.to_string(),
            }
        })?;
    }
    let subject = found.summary().ok().flatten().unwrap_or("").to_string();
    let forced = match previous {
        Some(prev) if prev != commit => !repo.graph_descendant_of(commit, prev).unwrap_or(false),
        _ => false,
    };
    let reader = GitTreeSource::open(mirror.path(), found.tree_id())
        .map_err(git_err)?
        .with_max_file_size(settings.max_file_size);
    let stacks = if last == Some(commit) {
        None
    } else {
        Some(
            discover(&reader, &settings.paths, &settings.name).map_err(|source| {
                GitError::Discovery {
                    at: at.clone(),
                    commit: commit.to_string(),
                    source: Box::new(source),
                }
            })?,
        )
    };
    Ok(PollOutcome {
        commit,
        previous,
        fetched,
        forced,
        subject,
        opened,
        mirror_path: mirror.path().to_path_buf(),
        stacks,
        reader: Arc::new(reader),
    })
}

/// Where the mirror keeps a named ref: branches and tags under their own names.
fn local_ref_for(name: &str) -> String {
    match RefSpec::candidates(name).as_slice() {
        [only] if only.starts_with("refs/") => only.clone(),
        _ if name == "HEAD" => "refs/stackd/HEAD".to_string(),
        _ => format!("refs/stackd/named/{name}"),
    }
}

/// The commit a local ref points at, through annotated tags.
fn peeled(repo: &Repository, name: &str) -> Option<Oid> {
    repo.find_reference(name)
        .ok()?
        .peel_to_commit()
        .ok()
        .map(|c| c.id())
}

/// A fetch bracketed by the crash marker.
fn fetch_guarded(
    ctx: &RemoteContext<'_>,
    mirror: &Mirror,
    refspecs: &[String],
    shallow: bool,
) -> Result<FetchStats, GitError> {
    let guard = mirror.begin_fetch().map_err(|e| GitError::CorruptMirror {
        at: ctx.at.clone(),
        path: mirror.path().display().to_string(),
        message: format!("cannot write fetch marker: {e}"),
    })?;
    let result = ctx.fetch(mirror.repo(), refspecs, shallow);
    // A fetch that returned, even with an error, left a consistent store; one
    // whose worker was killed (deadline, shutdown) may not have: the marker
    // stays, and the next poll rebuilds the mirror as after a crash.
    if !matches!(
        result,
        Err(GitError::Timeout { .. } | GitError::Task { .. })
    ) {
        let _ = guard.finish();
    }
    result
}

/// Fetches one commit by id; servers that refuse that get a fetch of all branches and tags.
fn fetch_pinned(
    ctx: &RemoteContext<'_>,
    mirror: &Mirror,
    oid: Oid,
    local_ref: &str,
) -> Result<FetchStats, GitError> {
    let by_id = fetch_guarded(ctx, mirror, &[format!("+{oid}:{local_ref}")], true);
    if mirror.repo().find_commit(oid).is_ok() {
        return by_id;
    }
    if let Err(
        e @ (GitError::Auth { .. }
        | GitError::Certificate { .. }
        | GitError::Unreachable { .. }
        | GitError::Timeout { .. }
        | GitError::Task { .. }),
    ) = by_id
    {
        return Err(e);
    }
    let stats = fetch_guarded(
        ctx,
        mirror,
        &[
            "+refs/heads/*:refs/stackd/all/heads/*".to_string(),
            "+refs/tags/*:refs/stackd/all/tags/*".to_string(),
        ],
        false,
    )?;
    if mirror.repo().find_commit(oid).is_err() {
        return Err(GitError::CommitNotFound {
            at: ctx.at.clone(),
            commit: oid.to_string(),
        });
    }
    let _ = mirror
        .repo()
        .reference(local_ref, oid, true, "stackd: pinned commit");
    Ok(stats)
}
