//! Sharding across replicas (`--shards N`): each shard is a Lease
//! `stackd-shard-K`, held as [`LeaderElection`] holds its one Lease, and a
//! replica runs the work of exactly the shards it holds.
//!
//! Each replica also renews a presence Lease `stackd-member-<identity>`, so the
//! replicas can count each other (a new replica holds no shard yet) and each
//! holds a fair share: more than that and it hands shards back, fewer and it
//! takes free or expired ones. A shard whose renewal is refused, or fails for
//! longer than the lease allows, is dropped at once, before any other replica
//! may take it over.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::reconcile::leader::{LeaderElection, LeaseTiming, expired};
use crate::shard;

const MEMBER_PREFIX: &str = "stackd-member-";

/// Who holds each shard, as this replica last read the Leases; for the page and API.
#[derive(Clone, Debug, Default)]
pub struct ShardHolders {
    inner: Arc<RwLock<Holders>>,
}

#[derive(Clone, Debug, Default)]
struct Holders {
    shards: u32,
    identity: String,
    by_shard: BTreeMap<u32, String>,
}

impl ShardHolders {
    pub fn new(shards: u32, identity: &str) -> Self {
        let holders = Holders {
            shards,
            identity: identity.to_string(),
            by_shard: BTreeMap::new(),
        };
        ShardHolders {
            inner: Arc::new(RwLock::new(holders)),
        }
    }

    /// The number of shards (0 when not sharded).
    pub fn shards(&self) -> u32 {
        self.read().shards
    }

    /// The shard of a stack and the replica holding it, if known.
    pub fn of_stack(&self, namespace: &str, name: &str) -> Option<(u32, Option<String>)> {
        let holders = self.read();
        if holders.shards == 0 {
            return None;
        }
        let shard = shard::of_stack(namespace, name, holders.shards);
        Some((shard, holders.by_shard.get(&shard).cloned()))
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.read().identity.clone()
    }

    /// Whether this replica holds `shard`.
    pub fn holds(&self, shard: u32) -> bool {
        let holders = self.read();
        holders.by_shard.get(&shard) == Some(&holders.identity)
    }

    /// Every shard with its holder (`None`: no live holder).
    pub fn all(&self) -> Vec<(u32, Option<String>)> {
        let holders = self.read();
        (0..holders.shards)
            .map(|s| (s, holders.by_shard.get(&s).cloned()))
            .collect()
    }

    pub(crate) fn set(&self, shard: u32, holder: Option<String>) {
        let mut holders = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match holder {
            Some(holder) => holders.by_shard.insert(shard, holder),
            None => holders.by_shard.remove(&shard),
        };
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Holders> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// What one round read from the Leases.
#[derive(Debug, Default, PartialEq, Eq)]
struct Observed {
    /// Live replicas (unexpired presence Leases), this one included.
    members: usize,
    /// Shards with a live holder, and who.
    held_by: BTreeMap<u32, String>,
}

/// A shard this replica works on.
struct Held {
    election: LeaderElection,
    token: CancellationToken,
    task: JoinHandle<()>,
    /// When the Lease was last renewed; the watchdog reads it.
    renewed: Arc<std::sync::Mutex<tokio::time::Instant>>,
}

impl Held {
    fn renewed_now(&self) {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
    }
}

/// Cancels `token` once `deadline` has passed since the last renewal, wherever
/// the renewing loop is: a renewal that hangs (a partition) must not keep the
/// work writing past the point where another replica may take the shard.
fn watchdog(
    token: CancellationToken,
    renewed: Arc<std::sync::Mutex<tokio::time::Instant>>,
    deadline: Duration,
) {
    tokio::spawn(async move {
        loop {
            let until = *renewed.lock().unwrap_or_else(|e| e.into_inner()) + deadline;
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep_until(until) => {}
            }
            let last = *renewed.lock().unwrap_or_else(|e| e.into_inner());
            if last + deadline <= tokio::time::Instant::now() {
                tracing::warn!("shard lease not renewed in time; stopping its work");
                token.cancel();
                return;
            }
        }
    });
}

pub struct ShardElection {
    api: Api<Lease>,
    client: Client,
    namespace: String,
    shards: u32,
    identity: String,
    timing: LeaseTiming,
    member: LeaderElection,
    holders: ShardHolders,
    metrics: Metrics,
}

impl ShardElection {
    pub fn new(
        client: Client,
        namespace: &str,
        shards: u32,
        identity: &str,
        timing: LeaseTiming,
        holders: ShardHolders,
        metrics: Metrics,
    ) -> Self {
        let member = LeaderElection::new(
            client.clone(),
            namespace,
            &member_lease(identity),
            identity,
            timing.clone(),
        );
        for s in 0..shards {
            metrics
                .shard_owned
                .with_label_values(&[&s.to_string()])
                .set(0);
        }
        ShardElection {
            api: Api::namespaced(client.clone(), namespace),
            client,
            namespace: namespace.to_string(),
            shards,
            identity: identity.to_string(),
            timing,
            member,
            holders,
            metrics,
        }
    }

    /// Runs `work(shard, token)` for every shard this replica holds, until
    /// `shutdown`. The token is cancelled the moment the shard is lost or
    /// handed back; `work` must stop writing then and return. On shutdown
    /// every shard is handed back, so the others need not wait for expiry.
    pub async fn run<F, Fut>(&self, shutdown: CancellationToken, mut work: F)
    where
        F: FnMut(u32, CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut held: BTreeMap<u32, Held> = BTreeMap::new();
        while !shutdown.is_cancelled() {
            self.round(&shutdown, &mut held, &mut work).await;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.timing.retry_every) => {}
            }
        }
        let shards: Vec<u32> = held.keys().copied().collect();
        for shard in shards {
            if let Some(lost) = held.remove(&shard) {
                self.hand_back(shard, lost).await;
            }
        }
        if let Err(error) = self.member.release().await {
            tracing::warn!(%error, "releasing the presence lease");
        }
    }

    /// One round: renew what is held, read the Leases, then hand back or take
    /// shards towards the fair share.
    async fn round<F, Fut>(
        &self,
        shutdown: &CancellationToken,
        held: &mut BTreeMap<u32, Held>,
        work: &mut F,
    ) where
        F: FnMut(u32, CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.renew(held).await;
        let limit = self.timing.renew_every;
        match tokio::time::timeout(limit, self.member.try_acquire_or_renew()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "renewing the presence lease"),
            Err(_) => tracing::warn!("renewing the presence lease timed out"),
        }
        let observed = match tokio::time::timeout(limit, self.observe()).await {
            Ok(Ok(observed)) => observed,
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading the shard leases");
                return;
            }
            Err(_) => {
                tracing::warn!("reading the shard leases timed out");
                return;
            }
        };
        for s in 0..self.shards {
            self.holders.set(s, observed.held_by.get(&s).cloned());
        }
        let fair = shard::fair_share(self.shards, observed.members) as usize;
        // Too many: hand back the highest shards, so that the others find them free.
        while held.len() > fair {
            let Some((&shard, _)) = held.iter().next_back() else {
                break;
            };
            if let Some(extra) = held.remove(&shard) {
                tracing::info!(shard, fair, "handing a shard back");
                self.hand_back(shard, extra).await;
                self.holders.set(shard, None);
            }
        }
        // Too few: take free shards, starting at a place of our own so that
        // replicas starting together do not all race for shard 0.
        let start = shard::of_repository(&self.identity, self.shards);
        for offset in 0..self.shards {
            if held.len() >= fair || shutdown.is_cancelled() {
                break;
            }
            let shard = (start + offset) % self.shards;
            if held.contains_key(&shard) || observed.held_by.contains_key(&shard) {
                continue;
            }
            let election = LeaderElection::new(
                self.client.clone(),
                &self.namespace,
                &shard::lease_name(shard),
                &self.identity,
                self.timing.clone(),
            );
            let taken =
                tokio::time::timeout(self.timing.renew_every, election.try_acquire_or_renew());
            match taken.await.unwrap_or(Ok(false)) {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, shard, "holding shard");
                    let token = shutdown.child_token();
                    let renewed = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
                    watchdog(token.clone(), renewed.clone(), self.renew_deadline());
                    let task = tokio::spawn(work(shard, token.clone()));
                    held.insert(
                        shard,
                        Held {
                            election,
                            token,
                            task,
                            renewed,
                        },
                    );
                    self.set_owned(shard, true);
                    self.holders.set(shard, Some(self.identity.clone()));
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, shard, "taking a shard"),
            }
        }
    }

    /// Renews every held shard; drops at once a shard whose renewal was refused
    /// (someone else holds it), or that could not be renewed for so long that
    /// another replica may take it soon.
    async fn renew(&self, held: &mut BTreeMap<u32, Held>) {
        let deadline = self.renew_deadline();
        let mut lost = Vec::new();
        for (&shard, entry) in held.iter_mut() {
            // Stopped by the watchdog, or ended on its own.
            if entry.token.is_cancelled() || entry.task.is_finished() {
                lost.push(shard);
                continue;
            }
            let renewal = tokio::time::timeout(deadline, entry.election.try_acquire_or_renew());
            match renewal.await {
                Ok(Ok(true)) => entry.renewed_now(),
                Ok(Ok(false)) => lost.push(shard),
                Ok(Err(error)) => tracing::warn!(%error, shard, "renewing a shard lease"),
                Err(_) => tracing::warn!(shard, "renewing a shard lease timed out"),
            }
        }
        for shard in lost {
            if let Some(entry) = held.remove(&shard) {
                tracing::warn!(identity = %self.identity, shard, "lost the shard; stopping its work");
                entry.token.cancel();
                let _ = entry.task.await;
                self.set_owned(shard, false);
                self.holders.set(shard, None);
            }
        }
    }

    /// Stops a shard's work, then gives its Lease up.
    async fn hand_back(&self, shard: u32, entry: Held) {
        entry.token.cancel();
        let _ = entry.task.await;
        self.set_owned(shard, false);
        if let Err(error) = entry.election.release().await {
            tracing::warn!(%error, shard, "handing back a shard lease");
        }
    }

    /// Reads every Lease of the namespace once: the live replicas and the
    /// live holders of each shard.
    async fn observe(&self) -> Result<Observed, kube::Error> {
        let leases = self.api.list(&ListParams::default()).await?;
        Ok(observe(&leases.items, self.shards, Timestamp::now()))
    }

    /// How long after its last renewal a shard's work stops: a renewal period
    /// before the Lease may expire for the others.
    fn renew_deadline(&self) -> Duration {
        self.timing
            .lease_duration
            .saturating_sub(self.timing.renew_every)
    }

    fn set_owned(&self, shard: u32, owned: bool) {
        self.metrics
            .shard_owned
            .with_label_values(&[&shard.to_string()])
            .set(i64::from(owned));
    }
}

/// The presence Lease of a replica: its identity made a valid object name.
fn member_lease(identity: &str) -> String {
    let clean: String = identity
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("{MEMBER_PREFIX}{}", clean.trim_matches(['-', '.']));
    name.truncate(253);
    name
}

/// Pure: the live replicas and shard holders among `leases` at `now`.
fn observe(leases: &[Lease], shards: u32, now: Timestamp) -> Observed {
    let mut observed = Observed::default();
    for lease in leases {
        let Some(name) = lease.metadata.name.as_deref() else {
            continue;
        };
        let Some(spec) = &lease.spec else { continue };
        let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
            continue;
        };
        if expired(spec, now) {
            continue;
        }
        if name.starts_with(MEMBER_PREFIX) {
            observed.members += 1;
        } else if let Some(shard) = (0..shards).find(|s| shard::lease_name(*s) == name) {
            observed.held_by.insert(shard, holder.to_string());
        }
    }
    // This replica counts even before its presence Lease is first written.
    observed.members = observed.members.max(1);
    observed
}

/// How long the lease lasts, renews and retries for `--lease-duration`: the
/// defaults' proportions (15 s, 5 s, 2 s).
pub fn timing_for(lease_duration: Duration) -> LeaseTiming {
    LeaseTiming {
        lease_duration,
        renew_every: lease_duration / 3,
        retry_every: lease_duration * 2 / 15,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::SignedDuration;
    use kube::api::ObjectMeta;

    fn lease(name: &str, holder: &str, renewed_seconds_ago: i64) -> Lease {
        let now = Timestamp::now();
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_string()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(
                    now.checked_sub(SignedDuration::from_secs(renewed_seconds_ago))
                        .unwrap(),
                )),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn live_members_and_holders_are_read_and_expired_ones_ignored() {
        let leases = vec![
            lease("stackd-member-a", "a", 1),
            lease("stackd-member-b", "b", 1),
            lease("stackd-member-c", "c", 60),
            lease("stackd-shard-0", "a", 1),
            lease("stackd-shard-1", "c", 60),
            lease("stackd-shard-2", "b", 2),
            lease("stackd-shard-9", "b", 2),
            lease("stackd-leader", "a", 1),
        ];
        let observed = observe(&leases, 3, Timestamp::now());
        assert_eq!(
            observed,
            Observed {
                members: 2,
                held_by: BTreeMap::from([(0, "a".to_string()), (2, "b".to_string())]),
            }
        );
        assert_eq!(observe(&[], 3, Timestamp::now()).members, 1);
    }

    #[test]
    fn presence_lease_names_are_valid_object_names() {
        assert_eq!(
            member_lease("stackd-7f9c-x2"),
            "stackd-member-stackd-7f9c-x2"
        );
        assert_eq!(member_lease("Pod_Name:1"), "stackd-member-pod-name-1");
        assert!(member_lease(&"a".repeat(400)).len() <= 253);
    }

    #[tokio::test]
    async fn the_watchdog_stops_the_work_unless_renewed_in_time() {
        let token = CancellationToken::new();
        let renewed = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
        watchdog(token.clone(), renewed.clone(), Duration::from_millis(400));
        tokio::time::sleep(Duration::from_millis(300)).await;
        *renewed.lock().unwrap() = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!token.is_cancelled(), "renewed 300 ms ago");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(token.is_cancelled(), "550 ms without a renewal");
    }

    #[test]
    fn timing_keeps_the_default_proportions() {
        let timing = timing_for(Duration::from_secs(15));
        assert_eq!(timing.renew_every, Duration::from_secs(5));
        assert_eq!(timing.retry_every, Duration::from_secs(2));
    }
}
