//! Prometheus metrics: one `stackd_` prefix, snake case, unit suffixes, `_total`
//! on counters. Labels never carry commit SHAs or paths (unbounded cardinality).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::crd::StackPhase;
use crate::reason::Reason;

/// Every metric stackd exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub git_poll_total: IntCounterVec,
    pub git_fetch_duration_seconds: HistogramVec,
    pub reconcile_total: IntCounterVec,
    pub reconcile_duration_seconds: HistogramVec,
    pub stack_info: IntGaugeVec,
    pub stack_ready: IntGaugeVec,
    pub stack_services_ready: IntGaugeVec,
    pub stack_services_desired: IntGaugeVec,
    pub objects_applied_total: IntCounterVec,
    pub objects_pruned_total: IntCounterVec,
    pub drift_corrected_total: IntCounterVec,
    pub rollbacks_total: IntCounterVec,
    pub webhook_requests_total: IntCounterVec,
    pub last_successful_sync_timestamp_seconds: GaugeVec,
    pub build_info: IntGaugeVec,
    pub commit_status_total: IntCounterVec,
    pub notifications_total: IntCounterVec,
    /// 1 for each shard whose Lease this replica holds (`--shards`), else 0.
    pub shard_owned: IntGaugeVec,
    /// The phase and reason labels each stack's `stack_info` and
    /// `stack_ready` series currently have.
    phases: Arc<Mutex<BTreeMap<(String, String), StackLabels>>>,
}

/// A stack's current `phase` and `reason` label values.
type StackLabels = (&'static str, &'static str);

fn phase_label(phase: StackPhase) -> &'static str {
    match phase {
        StackPhase::ReconciliationPending => "ReconciliationPending",
        StackPhase::Progressing => "Progressing",
        StackPhase::Available => "Available",
        StackPhase::Failure => "Failure",
        StackPhase::RolledBack => "RolledBack",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let buckets = vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ];
            let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("unique metric");
            metric
        };
        let last_sync = GaugeVec::new(
            Opts::new(
                "stackd_last_successful_sync_timestamp_seconds",
                "Unix time of the stack's last successful reconcile.",
            ),
            &["namespace", "stack"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(last_sync.clone()))
            .expect("unique metric");

        let metrics = Metrics {
            git_poll_total: counter(
                "stackd_git_poll_total",
                "Git polls by repository and result.",
                &["repository", "result"],
            ),
            git_fetch_duration_seconds: histogram(
                "stackd_git_fetch_duration_seconds",
                "Time spent fetching a repository.",
                &["repository"],
            ),
            reconcile_total: counter(
                "stackd_reconcile_total",
                "Stack reconciles by result (success or an error label).",
                &["stack", "namespace", "result"],
            ),
            reconcile_duration_seconds: histogram(
                "stackd_reconcile_duration_seconds",
                "Time spent reconciling a stack.",
                &["stack", "namespace"],
            ),
            stack_info: gauge(
                "stackd_stack_info",
                "A stack and its phase; always 1.",
                &["namespace", "stack", "phase"],
            ),
            stack_ready: gauge(
                "stackd_stack_ready",
                "A stack's Ready reason (the Stack's Ready condition); always 1, one series per stack.",
                &["namespace", "stack", "reason"],
            ),
            stack_services_ready: gauge(
                "stackd_stack_services_ready",
                "Services of the stack whose workloads are ready.",
                &["namespace", "stack"],
            ),
            stack_services_desired: gauge(
                "stackd_stack_services_desired",
                "Services of the stack.",
                &["namespace", "stack"],
            ),
            objects_applied_total: counter(
                "stackd_objects_applied_total",
                "Objects created or updated, by kind.",
                &["kind"],
            ),
            objects_pruned_total: counter(
                "stackd_objects_pruned_total",
                "Objects deleted by pruning, by kind.",
                &["kind"],
            ),
            drift_corrected_total: counter(
                "stackd_drift_corrected_total",
                "Objects re-applied because the live object drifted, by kind.",
                &["kind"],
            ),
            rollbacks_total: counter(
                "stackd_rollbacks_total",
                "Rollbacks to the last healthy revision after a missed health deadline.",
                &["namespace", "stack"],
            ),
            webhook_requests_total: counter(
                "stackd_webhook_requests_total",
                "Webhook requests by provider and result.",
                &["provider", "result"],
            ),
            last_successful_sync_timestamp_seconds: last_sync,
            build_info: gauge(
                "stackd_build_info",
                "Build information; always 1.",
                &["version"],
            ),
            commit_status_total: counter(
                "stackd_commit_status_total",
                "Commit statuses by repository and result (sent, refused, failed, dropped).",
                &["repository", "result"],
            ),
            notifications_total: counter(
                "stackd_notifications_total",
                "Notifications by notification name and result (sent, refused, failed, dropped).",
                &["name", "result"],
            ),
            shard_owned: gauge(
                "stackd_shard_owned",
                "1 while this replica holds the shard's Lease (--shards), else 0.",
                &["shard"],
            ),
            phases: Arc::default(),
            registry,
        };
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
    }

    /// Records a stack's phase, Ready reason and service counts (replacing its
    /// previous phase and reason series).
    pub fn set_stack(
        &self,
        namespace: &str,
        stack: &str,
        phase: StackPhase,
        reason: Reason,
        ready: u32,
        desired: u32,
    ) {
        let labels = (phase_label(phase), reason.as_str());
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), stack.to_string());
        if let Some((phase, reason)) = phases.insert(key, labels) {
            if phase != labels.0 {
                let _ = self
                    .stack_info
                    .remove_label_values(&[namespace, stack, phase]);
            }
            if reason != labels.1 {
                let _ = self
                    .stack_ready
                    .remove_label_values(&[namespace, stack, reason]);
            }
        }
        self.stack_info
            .with_label_values(&[namespace, stack, labels.0])
            .set(1);
        self.stack_ready
            .with_label_values(&[namespace, stack, labels.1])
            .set(1);
        self.stack_services_ready
            .with_label_values(&[namespace, stack])
            .set(i64::from(ready));
        self.stack_services_desired
            .with_label_values(&[namespace, stack])
            .set(i64::from(desired));
    }

    /// Counts one reconcile of a stack under `result` (`success`, a failure
    /// reason's label, or why nothing was done).
    pub fn reconcile_result(&self, namespace: &str, stack: &str, result: &str) {
        self.reconcile_total
            .with_label_values(&[stack, namespace, result])
            .inc();
    }

    /// Drops every series of a deleted stack.
    pub fn remove_stack(&self, namespace: &str, stack: &str) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((phase, reason)) = phases.remove(&(namespace.to_string(), stack.to_string())) {
            let _ = self
                .stack_info
                .remove_label_values(&[namespace, stack, phase]);
            let _ = self
                .stack_ready
                .remove_label_values(&[namespace, stack, reason]);
        }
        let _ = self
            .stack_services_ready
            .remove_label_values(&[namespace, stack]);
        let _ = self
            .stack_services_desired
            .remove_label_values(&[namespace, stack]);
        let _ = self
            .last_successful_sync_timestamp_seconds
            .remove_label_values(&[namespace, stack]);
        let _ = self
            .rollbacks_total
            .remove_label_values(&[namespace, stack]);
        let _ = self
            .reconcile_duration_seconds
            .remove_label_values(&[stack, namespace]);
        for family in self.reconcile_total.collect_results() {
            let _ = self
                .reconcile_total
                .remove_label_values(&[stack, namespace, &family]);
        }
    }

    /// One more rollback of a stack.
    pub fn rolled_back(&self, namespace: &str, stack: &str) {
        self.rollbacks_total
            .with_label_values(&[namespace, stack])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        String::from_utf8(self.exposition().flatten().collect()).expect("the text format is UTF-8")
    }

    /// The exposition one metric family at a time, encoded as it is read: at
    /// 1,000 stacks the whole text is about 2 MB, and a buffer of it (grown by
    /// doubling) was 3 MB of the restart's peak.
    pub fn exposition(&self) -> impl Iterator<Item = Vec<u8>> + Send + use<> {
        self.registry.gather().into_iter().map(|family| {
            let mut text = Vec::new();
            TextEncoder::new()
                .encode(std::slice::from_ref(&family), &mut text)
                .expect("text encoding never fails");
            text
        })
    }
}

trait ResultLabels {
    fn collect_results(&self) -> Vec<String>;
}

impl ResultLabels for IntCounterVec {
    /// Every `result` label value this counter has seen.
    fn collect_results(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let mut results: Vec<String> = self
            .collect()
            .iter()
            .flat_map(|family| family.get_metric().iter())
            .flat_map(|metric| metric.get_label().iter())
            .filter(|label| label.name() == "result")
            .map(|label| label.value().to_string())
            .collect();
        results.sort();
        results.dedup();
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_series_follow_phase_and_vanish_on_delete() {
        let metrics = Metrics::new();
        metrics.set_stack(
            "shop",
            "shop",
            StackPhase::Progressing,
            Reason::Progressing,
            1,
            3,
        );
        metrics.set_stack(
            "shop",
            "shop",
            StackPhase::Failure,
            Reason::LoadFailed,
            1,
            3,
        );
        let text = metrics.render();
        assert!(
            text.contains(
                r#"stackd_stack_ready{namespace="shop",reason="LoadFailed",stack="shop"} 1"#
            ),
            "{text}"
        );
        metrics.set_stack(
            "shop",
            "shop",
            StackPhase::Available,
            Reason::Available,
            3,
            3,
        );
        metrics
            .reconcile_total
            .with_label_values(&["shop", "shop", "success"])
            .inc();
        let text = metrics.render();
        assert!(
            text.contains(
                r#"stackd_stack_info{namespace="shop",phase="Available",stack="shop"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"phase="Progressing""#), "{text}");
        assert!(!text.contains(r#"reason="LoadFailed""#), "{text}");
        assert!(
            text.contains(
                r#"stackd_stack_ready{namespace="shop",reason="Available",stack="shop"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"stackd_stack_services_ready{namespace="shop",stack="shop"} 3"#),
            "{text}"
        );
        assert!(text.contains(&format!(
            r#"stackd_build_info{{version="{}"}} 1"#,
            env!("CARGO_PKG_VERSION")
        )));

        metrics.remove_stack("shop", "shop");
        let text = metrics.render();
        assert!(!text.contains(r#"stack="shop""#), "{text}");
    }
}
