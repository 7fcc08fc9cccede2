//! What the cluster's workload controllers write through the status
//! subresource: a Deployment's or DaemonSet's pods coming up, a Job ending.
//! Tests set readiness this way, on the in-process API server and on a real
//! cluster without those controllers (envtest), so that only they write it.
#![allow(dead_code)]

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

async fn write_status<K>(api: &Api<K>, name: &str, status: &Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// What the Deployment controller writes once the pods of the current
/// generation are up: every replica of the spec (1 if it names none) ready.
pub async fn deployment_ready(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = api.get(name).await.unwrap();
    let generation = deployment.metadata.generation.unwrap_or(1);
    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas);
    let replicas = replicas.unwrap_or(1);
    let status = json!({"status": {"observedGeneration": generation, "replicas": replicas,
        "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}});
    write_status(&api, name, &status).await;
}

/// What the Job controller writes when the Job ends.
pub async fn job_ended(client: &kube::Client, ns: &str, name: &str, succeeded: bool) {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let (kind, counts) = match succeeded {
        true => ("Complete", json!({"succeeded": 1})),
        false => ("Failed", json!({"failed": 4})),
    };
    let mut status = json!({"status": {"conditions": [{"type": kind, "status": "True",
        "reason": if succeeded { "Completed" } else { "BackoffLimitExceeded" },
        "message": if succeeded { "done" } else { "Job has reached the specified backoff limit" }}]}});
    for (key, value) in counts.as_object().unwrap() {
        status["status"][key] = value.clone();
    }
    write_status(&api, name, &status).await;
}

/// What the DaemonSet controller writes: 2 nodes, `ready` pods Ready, none
/// available yet (`minReadySeconds` not passed).
pub async fn daemon_set_status(client: &kube::Client, ns: &str, name: &str, ready: i32) {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
    let generation = api.get(name).await.unwrap().metadata.generation;
    let status = json!({"status": {"observedGeneration": generation.unwrap_or(1),
        "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberMisscheduled": 0,
        "updatedNumberScheduled": 2, "numberReady": ready, "numberAvailable": 0}});
    write_status(&api, name, &status).await;
}
