//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it:
//! the holder renews; others take over once a renewal is overdue. Writes use
//! the Lease's resourceVersion, so two replicas never both win a round.
//! Only the leader runs the writing loops; losing the lease cancels them at once.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct LeaseTiming {
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a follower tries to acquire.
    pub retry_every: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

#[derive(Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    lease_name: String,
    identity: String,
    timing: LeaseTiming,
}

fn lease_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl LeaderElection {
    pub fn new(
        client: Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            lease_name: lease_name.to_string(),
            identity: identity.to_string(),
            timing,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One round: `Ok(true)` when this replica holds the lease afterwards.
    /// A conflict (someone else wrote the lease first) is `Ok(false)`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == Some(self.identity.as_str()) {
            let acquired = spec.acquire_time.map(|t| t.0).unwrap_or(now);
            self.spec(acquired, now, transitions)
        } else if holder.is_none_or(str::is_empty) || expired(&spec, now) {
            self.spec(now, now, transitions.saturating_add(1))
        } else {
            return Ok(false);
        };
        lease.spec = Some(next);
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the lease up (if still held), so another replica need not wait for expiry.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.lease_name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(lease_seconds(self.timing.lease_duration)),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Runs `work` whenever this replica leads, until `shutdown`. `work` gets a
    /// token that is cancelled the moment leadership is lost; it must stop
    /// writing then and return. Returns after releasing the lease.
    pub async fn lead<F, Fut>(&self, shutdown: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        while !shutdown.is_cancelled() {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = %self.lease_name, "leading");
                    let leading = shutdown.child_token();
                    let task = tokio::spawn(work(leading.clone()));
                    self.keep_renewing(&leading).await;
                    leading.cancel();
                    let _ = task.await;
                    tracing::info!(identity = %self.identity, "stopped leading");
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.timing.retry_every) => {}
            }
        }
        if let Err(error) = self.release().await {
            tracing::warn!(%error, "releasing the lease");
        }
    }

    /// Renews until a renewal is refused, renewals fail for longer than the lease
    /// lasts (minus a renewal period of margin), or `leading` is cancelled.
    async fn keep_renewing(&self, leading: &CancellationToken) {
        let deadline = self
            .timing
            .lease_duration
            .saturating_sub(self.timing.renew_every);
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = leading.cancelled() => return,
                _ = tokio::time::sleep(self.timing.renew_every) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(error) => {
                    tracing::warn!(%error, "renewing the lease");
                    if last_renewed.elapsed() >= deadline {
                        return;
                    }
                }
            }
        }
    }
}

/// Whether the lease's holder has missed its renewal.
pub(crate) fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed
        .0
        .saturating_add(SignedDuration::from_secs(seconds))
        .is_ok_and(|end| end < now)
}
