//! Leader election in the reconciler tests: the harness's controller run only
//! while a replica holds the Lease `stackd/stackd-leader`, and another
//! replica taking a Lease over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use stackd::reconcile::leader::{LeaderElection, LeaseTiming};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Harness, test_options};

/// A Lease of 2 s, renewed every 300 ms.
pub fn fast_lease() -> LeaseTiming {
    LeaseTiming {
        lease_duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(300),
        retry_every: Duration::from_millis(100),
    }
}

/// The harness's controller, run by replica `identity` while it holds the
/// Lease `stackd/stackd-leader`: the token that stops the replica, and its task.
pub fn lead(h: &Harness, identity: &str, timing: LeaseTiming) -> (CancellationToken, Leading) {
    let election = LeaderElection::new(
        h.client.clone(),
        "stackd",
        "stackd-leader",
        identity,
        timing,
    );
    let stop = CancellationToken::new();
    let (client, handles) = (h.client.clone(), h.handles.clone());
    let work = move |token: CancellationToken| {
        stackd::reconcile::run(client.clone(), test_options(), handles.clone(), token)
    };
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { election.lead(stop, work).await }
    });
    (stop, task)
}

pub type Leading = tokio::task::JoinHandle<()>;

/// Replaces the Lease's holder with `holder` for `seconds`, as another replica
/// winning an election would. The leader renews the same Lease every few
/// hundred milliseconds, so a GET-then-replace can lose the
/// optimistic-concurrency race (409 Conflict): retry with a fresh GET, as a
/// real contender does.
pub async fn take_lease(h: &Harness, namespace: &str, name: &str, holder: &str, seconds: i32) {
    let leases: Api<Lease> = Api::namespaced(h.client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut lease = leases.get(name).await.unwrap();
        let spec = lease.spec.as_mut().expect("the Lease has a spec");
        spec.holder_identity = Some(holder.into());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        match leases.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 && Instant::now() < deadline => {
                continue;
            }
            Err(e) => panic!("taking the Lease {namespace}/{name}: {e}"),
        }
    }
}
