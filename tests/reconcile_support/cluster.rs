//! The controller against the in-process API server or the cluster named by
//! `KUBECONFIG_E2E` (one without workload controllers, like envtest, so that
//! only the tests write workload status). There each test gets its own
//! namespace and the tests run one at a time (each runs a controller for the
//! whole cluster); checks that read the request log skip, saying so.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use stackd::crd::Stack;
use stackd::reconcile::{
    ControllerHandles, ControllerOptions, DesiredStack, ReconcileError, SyncPolicy, SyncReport,
    sync_repository,
};
use tokio::time::Instant;

use super::controller::{Running, controller_writes, handles, quiet_for};
use super::{REPOSITORY, test_options, write_paths};
use crate::fake_api::{FakeApiServer, TestCluster, test_client, unique};

/// On a real cluster one test at a time: each test's controller reconciles every Stack there.
static REAL_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Checks read objects without requests: the fake's store, or on a real
/// cluster a snapshot of the test's namespace that [`Cluster::wait_for`] and
/// [`Cluster::settle`] take.
pub struct Cluster {
    pub cluster: TestCluster,
    pub client: kube::Client,
    pub handles: ControllerHandles,
    /// The test's namespace: the one asked for on the fake, a fresh one on a real cluster.
    pub ns: String,
    /// The last snapshot on a real cluster, by (kind, name).
    seen: Mutex<BTreeMap<(String, String), Value>>,
    running: Running,
    _one_at_a_time: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl Cluster {
    /// The controller running with the tests' options, for stacks in `ns`
    /// (on a real cluster, a fresh namespace named after it).
    pub async fn started(ns: &str) -> Cluster {
        let cluster = test_client().await;
        let (ns, guard) = match cluster.fake {
            Some(_) => (ns.to_string(), None),
            None => (unique(ns), Some(REAL_CLUSTER.lock().await)),
        };
        let mut cluster = Cluster {
            client: cluster.client.clone(),
            cluster,
            handles: handles(),
            ns,
            seen: Mutex::default(),
            running: Running::default(),
            _one_at_a_time: guard,
        };
        cluster.start(test_options());
        cluster
    }

    pub fn start(&mut self, options: ControllerOptions) {
        self.running.start(&self.client, options, &self.handles);
    }

    pub async fn stop(&mut self) {
        self.running.stop().await;
    }

    /// The in-process server, or `None` on a real cluster after saying which check is skipped.
    pub fn fake_or_skip(&self, what: &str) -> Option<&FakeApiServer> {
        self.cluster.fake_or_skip(what)
    }

    /// What the Git sync does with `stacks`, in the test's namespace.
    pub async fn sync(
        &self,
        mut stacks: Vec<DesiredStack>,
        policy: SyncPolicy,
    ) -> Result<SyncReport, ReconcileError> {
        for stack in &mut stacks {
            stack.namespace = self.ns.clone();
        }
        let secrets = &self.handles.secrets;
        sync_repository(&self.client, secrets, REPOSITORY, &stacks, policy).await
    }

    /// An object of the test's namespace, as stored (the fake) or last seen (a real cluster).
    pub fn object(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        match &self.cluster.fake {
            Some(fake) => fake.object(api_version, kind, &self.ns, name),
            None => {
                let seen = self.seen.lock().unwrap();
                seen.get(&(kind.to_string(), name.to_string())).cloned()
            }
        }
    }

    /// On a real cluster, a new snapshot of the kinds the tests read.
    async fn refresh(&self) {
        if self.cluster.fake.is_some() {
            return;
        }
        let mut seen = BTreeMap::new();
        seen.extend(self.list::<Deployment>().await);
        seen.extend(self.list::<DaemonSet>().await);
        seen.extend(self.list::<Job>().await);
        seen.extend(self.list::<Service>().await);
        seen.extend(self.list::<Stack>().await);
        *self.seen.lock().unwrap() = seen;
    }

    async fn list<K>(&self) -> Vec<((String, String), Value)>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Debug
            + DeserializeOwned
            + Serialize,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &self.ns);
        let list = api.list(&ListParams::default()).await.expect("listing");
        list.items
            .into_iter()
            .map(|o| {
                let key = (K::kind(&()).to_string(), o.name_any());
                (key, serde_json::to_value(&o).expect("objects serialise"))
            })
            .collect()
    }

    /// The resourceVersion of each Deployment, Job and Service: unchanged means not written.
    pub async fn versions(&self) -> BTreeMap<String, String> {
        let mut versions = BTreeMap::new();
        let lists = [
            self.list::<Deployment>().await,
            self.list::<Job>().await,
            self.list::<Service>().await,
        ];
        for ((kind, name), object) in lists.into_iter().flatten() {
            let version = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
            versions.insert(format!("{kind}/{name}"), version.to_string());
        }
        versions
    }

    /// The test namespace's Events.
    pub async fn events(&self) -> Vec<Value> {
        match &self.cluster.fake {
            Some(fake) => fake.objects_of("events.k8s.io/v1", "Event"),
            None => self
                .list::<Event>()
                .await
                .into_iter()
                .map(|(_, e)| e)
                .collect(),
        }
    }

    /// For a timeout's message: the writes so far, or what a real cluster showed.
    fn describe(&self) -> String {
        match &self.cluster.fake {
            Some(fake) => format!("writes: {:#?}", write_paths(&fake.writes())),
            None => format!("seen: {:?}", self.seen.lock().unwrap().keys()),
        }
    }

    /// Waits until `check` holds.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Cluster) -> bool) {
        let limit = match self.cluster.fake {
            Some(_) => Duration::from_secs(15),
            None => Duration::from_secs(60),
        };
        let started = Instant::now();
        loop {
            self.refresh().await;
            if check(self) {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "timed out waiting for {what}; {}",
                self.describe()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the controller settled: no write for a while (the fake's
    /// request log, lease renewals aside), or on a real cluster no object of the
    /// namespace changed its resourceVersion.
    pub async fn settle(&self) {
        let (quiet, every) = match self.cluster.fake {
            Some(_) => (Duration::from_millis(700), Duration::from_millis(50)),
            None => (Duration::from_secs(2), Duration::from_millis(200)),
        };
        let state = async || match &self.cluster.fake {
            Some(fake) => vec![controller_writes(fake).to_string()],
            None => {
                self.refresh().await;
                let seen = self.seen.lock().unwrap();
                let version = |o: &Value| o["metadata"]["resourceVersion"].to_string();
                seen.values().map(version).collect()
            }
        };
        quiet_for(quiet, every, Duration::from_secs(30), state).await;
    }
}
