//! Compose networks → NetworkPolicies, checked by reachability: no CNI runs here,
//! so this file evaluates the rendered policies with the semantics of the
//! Kubernetes API reference (networking.k8s.io/v1 NetworkPolicy) and compares
//! the result with what compose allows (two services reach each other when they
//! share a network).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// A pod as the evaluator sees it.
#[derive(Clone, Debug)]
struct Pod {
    namespace: String,
    labels: BTreeMap<String, String>,
    /// Named container ports: name → (protocol, number).
    named_ports: BTreeMap<String, (String, i64)>,
}

struct Cluster {
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    policies: Vec<Value>,
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A LabelSelector: matchLabels AND matchExpressions; an empty one selects everything.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = string_map(&selector["matchLabels"])
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    labels_match
        && expressions.iter().all(|e| {
            let key = e["key"].as_str().unwrap();
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap() {
                "In" => labels
                    .get(key)
                    .is_some_and(|v| values.contains(&v.as_str())),
                "NotIn" => labels
                    .get(key)
                    .is_none_or(|v| !values.contains(&v.as_str())),
                "Exists" => labels.contains_key(key),
                "DoesNotExist" => !labels.contains_key(key),
                other => panic!("unknown selector operator {other}"),
            }
        })
}

impl Cluster {
    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespace_labels
            .get(namespace)
            .cloned()
            .unwrap_or_default();
        labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
        labels
    }

    /// A peer of a rule in a policy of `policy_namespace` matches `pod` (ipBlock never matches a pod here).
    fn peer_matches(&self, peer: &Value, policy_namespace: &str, pod: &Pod) -> bool {
        let pod_selector = peer.get("podSelector").filter(|v| !v.is_null());
        let namespace_selector = peer.get("namespaceSelector").filter(|v| !v.is_null());
        match (pod_selector, namespace_selector) {
            (None, None) => false,
            (Some(p), None) => pod.namespace == policy_namespace && selects(p, &pod.labels),
            (p, Some(n)) => {
                selects(n, &self.namespace_labels(&pod.namespace))
                    && p.is_none_or(|p| selects(p, &pod.labels))
            }
        }
    }

    /// `ports` of a rule admit `port/protocol` on `target` (named ports resolve on the target pod).
    fn ports_match(ports: &Value, protocol: &str, port: i64, target: &Pod) -> bool {
        let Some(ports) = ports.as_array().filter(|p| !p.is_empty()) else {
            return true;
        };
        ports.iter().any(|p| {
            let p_protocol = p["protocol"].as_str().unwrap_or("TCP");
            if p_protocol != protocol {
                return false;
            }
            match &p["port"] {
                Value::Null => true,
                Value::Number(n) => {
                    let start = n.as_i64().unwrap();
                    let end = p["endPort"].as_i64().unwrap_or(start);
                    (start..=end).contains(&port)
                }
                Value::String(name) => target
                    .named_ports
                    .get(name)
                    .is_some_and(|(proto, number)| proto == protocol && *number == port),
                other => panic!("bad port {other}"),
            }
        })
    }

    fn policy_types(policy: &Value) -> Vec<String> {
        match policy["spec"]["policyTypes"].as_array() {
            Some(types) => types
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
            None => {
                let mut types = vec!["Ingress".to_string()];
                if policy["spec"].get("egress").is_some_and(|e| !e.is_null()) {
                    types.push("Egress".to_string());
                }
                types
            }
        }
    }

    /// Whether `direction` ("Ingress"/"Egress") traffic of `subject` with `other` is allowed.
    fn allowed(
        &self,
        direction: &str,
        subject: &Pod,
        other: &Pod,
        protocol: &str,
        port: i64,
        target: &Pod,
    ) -> bool {
        let (rules_key, peers_key) = match direction {
            "Ingress" => ("ingress", "from"),
            _ => ("egress", "to"),
        };
        let isolating: Vec<&Value> = self
            .policies
            .iter()
            .filter(|p| p["metadata"]["namespace"].as_str() == Some(subject.namespace.as_str()))
            .filter(|p| selects(&p["spec"]["podSelector"], &subject.labels))
            .filter(|p| Self::policy_types(p).iter().any(|t| t == direction))
            .collect();
        if isolating.is_empty() {
            return true;
        }
        isolating.iter().any(|policy| {
            let namespace = policy["metadata"]["namespace"].as_str().unwrap();
            let rules = policy["spec"][rules_key]
                .as_array()
                .cloned()
                .unwrap_or_default();
            rules.iter().any(|rule| {
                let peers_ok = match rule[peers_key].as_array() {
                    None => true,
                    Some(peers) if peers.is_empty() => true,
                    Some(peers) => peers
                        .iter()
                        .any(|peer| self.peer_matches(peer, namespace, other)),
                };
                peers_ok && Self::ports_match(&rule["ports"], protocol, port, target)
            })
        })
    }

    fn can_reach(&self, from: &Pod, to: &Pod, protocol: &str, port: i64) -> bool {
        self.allowed("Egress", from, to, protocol, port, to)
            && self.allowed("Ingress", to, from, protocol, port, to)
    }
}

/// The rendered objects as a cluster, and one pod per service (by `stackd.dev/service`).
fn cluster_of(objects: &[Value]) -> (Cluster, BTreeMap<String, Pod>) {
    let mut cluster = Cluster {
        namespace_labels: BTreeMap::new(),
        policies: Vec::new(),
    };
    let mut pods = BTreeMap::new();
    for object in objects {
        match object["kind"].as_str().unwrap() {
            "Namespace" => {
                cluster.namespace_labels.insert(
                    object["metadata"]["name"].as_str().unwrap().to_string(),
                    string_map(&object["metadata"]["labels"]),
                );
            }
            "NetworkPolicy" => cluster.policies.push(object.clone()),
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
                let template = &object["spec"]["template"];
                let labels = string_map(&template["metadata"]["labels"]);
                let mut named_ports = BTreeMap::new();
                for container in template["spec"]["containers"].as_array().unwrap() {
                    for port in container["ports"].as_array().into_iter().flatten() {
                        if let Some(name) = port["name"].as_str() {
                            named_ports.insert(
                                name.to_string(),
                                (
                                    port["protocol"].as_str().unwrap_or("TCP").to_string(),
                                    port["containerPort"].as_i64().unwrap(),
                                ),
                            );
                        }
                    }
                }
                let service = labels["stackd.dev/service"].clone();
                pods.insert(
                    service,
                    Pod {
                        namespace: object["metadata"]["namespace"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                        labels,
                        named_ports,
                    },
                );
            }
            _ => {}
        }
    }
    (cluster, pods)
}

/// A pod of another namespace (a client outside the stack), and the cluster DNS.
fn outsider() -> Pod {
    Pod {
        namespace: "elsewhere".into(),
        labels: BTreeMap::from([("app".into(), "client".into())]),
        named_ports: BTreeMap::new(),
    }
}

fn kube_dns() -> Pod {
    Pod {
        namespace: "kube-system".into(),
        labels: BTreeMap::from([("k8s-app".into(), "kube-dns".into())]),
        named_ports: BTreeMap::new(),
    }
}

/// Compose's view, read from the file itself: the networks of each service
/// (none listed: `default`), which networks are internal, and who uses network_mode.
struct ComposeTruth {
    networks: BTreeMap<String, BTreeSet<String>>,
    internal: BTreeSet<String>,
    network_mode: BTreeSet<String>,
}

fn compose_truth(path: &std::path::Path) -> Option<ComposeTruth> {
    let text = std::fs::read_to_string(path).ok()?;
    let document: Value = serde_saphyr::from_str(&text).ok()?;
    let services = document["services"].as_object()?;
    let mut truth = ComposeTruth {
        networks: BTreeMap::new(),
        internal: BTreeSet::new(),
        network_mode: BTreeSet::new(),
    };
    for (name, service) in services {
        let networks: BTreeSet<String> = match &service["networks"] {
            Value::Array(list) => list
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            Value::Object(map) => map.keys().cloned().collect(),
            _ => BTreeSet::from(["default".to_string()]),
        };
        if service.get("network_mode").is_some() {
            truth.network_mode.insert(name.clone());
        }
        truth.networks.insert(name.clone(), networks);
    }
    for (name, network) in document["networks"].as_object().into_iter().flatten() {
        if network["internal"] == json!(true) {
            truth.internal.insert(name.clone());
        }
    }
    Some(truth)
}

/// A port no service publishes: compose lets services that share a network
/// reach each other on any port, and published ports are open to anyone anyway
/// (checked by [`check_published`]).
const UNPUBLISHED: i64 = 65000;

#[derive(Default, Debug)]
struct Tally {
    files: usize,
    allowed: usize,
    denied: usize,
    egress_limited: usize,
}

/// Checks every ordered pair of services of one rendered file against compose.
fn check_file(label: &str, objects: &[Value], truth: &ComposeTruth, tally: &mut Tally) {
    let (cluster, pods) = cluster_of(objects);
    // Rendered names are sanitised compose names; map them back.
    let compose_name = |kube: &str| {
        truth
            .networks
            .keys()
            .find(|c| stackd::render::sanitise_name(c) == kube)
            .cloned()
    };
    for (a, pod_a) in &pods {
        let Some(ca) = compose_name(a) else { continue };
        if truth.network_mode.contains(&ca) {
            continue;
        }
        let nets_a = &truth.networks[&ca];
        for (b, pod_b) in &pods {
            let Some(cb) = compose_name(b) else { continue };
            if a == b || truth.network_mode.contains(&cb) {
                continue;
            }
            let shared = !nets_a.is_disjoint(&truth.networks[&cb]);
            let (protocol, port) = ("TCP", UNPUBLISHED);
            let reached = cluster.can_reach(pod_a, pod_b, protocol, port);
            assert_eq!(
                reached, shared,
                "{label}: {ca} → {cb} on {port}/{protocol}: compose says {shared} (networks {nets_a:?} vs {:?})",
                truth.networks[&cb]
            );
            if shared {
                tally.allowed += 1;
            } else {
                tally.denied += 1;
            }
        }
        // Internal-only services reach no one outside their networks, but DNS works.
        let internal_only = nets_a.iter().all(|n| truth.internal.contains(n));
        assert!(
            cluster.can_reach(pod_a, &kube_dns(), "UDP", 53),
            "{label}: {ca} cannot resolve names"
        );
        assert_eq!(
            cluster.can_reach(pod_a, &outsider(), "TCP", 443),
            !internal_only,
            "{label}: {ca} egress outside its networks (internal only: {internal_only})"
        );
        if internal_only {
            tally.egress_limited += 1;
        }
    }
}

/// Ports published (by the `-published` / `-random-ports` Services) are open to
/// anyone; an unpublished port is not reachable from outside the stack.
fn check_published(label: &str, objects: &[Value]) {
    let (cluster, pods) = cluster_of(objects);
    for (name, pod) in &pods {
        let mut published = BTreeSet::new();
        for suffix in ["published", "random-ports"] {
            let service = objects.iter().find(|o| {
                o["kind"] == "Service"
                    && o["metadata"]["name"].as_str() == Some(&format!("{name}-{suffix}"))
            });
            for port in service
                .and_then(|s| s["spec"]["ports"].as_array())
                .into_iter()
                .flatten()
            {
                let target = port["targetPort"]
                    .as_i64()
                    .or(port["port"].as_i64())
                    .unwrap();
                let protocol = port["protocol"].as_str().unwrap_or("TCP").to_string();
                published.insert((protocol, target));
            }
        }
        for (protocol, port) in &published {
            assert!(
                cluster.can_reach(&outsider(), pod, protocol, *port),
                "{label}: published {port}/{protocol} of {name} is not reachable from outside"
            );
        }
        if !published.contains(&("TCP".to_string(), UNPUBLISHED)) {
            assert!(
                !cluster.can_reach(&outsider(), pod, "TCP", UNPUBLISHED),
                "{label}: {name} is reachable from outside on an unpublished port"
            );
        }
    }
}

fn render_json(rendered: &stackd::render::object::Rendered) -> Vec<Value> {
    rendered.objects.iter().map(|o| o.to_json()).collect()
}

#[test]
fn every_corpus_file_with_networks_allows_exactly_what_compose_allows() {
    let mut tally = Tally::default();
    for file in common::corpus_compose_files() {
        let Some(truth) = compose_truth(&file.path) else {
            continue;
        };
        let text = std::fs::read_to_string(&file.path).unwrap();
        if !text.contains("networks:") {
            continue;
        }
        let Ok(rendered) = common::render_corpus_file(&file) else {
            continue;
        };
        let objects = render_json(&rendered);
        let label = file.relative();
        check_file(&label, &objects, &truth, &mut tally);
        check_published(&label, &objects);
        tally.files += 1;
    }
    eprintln!("checked {tally:?}");
    // The corpus has stacks whose services are split across networks.
    assert!(tally.files >= 5, "{tally:?}");
    assert!(tally.allowed > 0 && tally.denied > 0, "{tally:?}");
}

fn render_compose(yaml: &str, network_policies: bool) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yaml"), yaml).unwrap();
    let rendered = stackd::local::render_local(&stackd::local::LocalRender {
        path: dir.path().to_path_buf(),
        name: Some("shop".into()),
        network_policies: Some(network_policies),
        ..stackd::local::LocalRender::default()
    })
    .expect("renders");
    render_json(&rendered)
}

const SPLIT: &str = r#"
services:
  proxy:
    image: nginx
    ports: ["80:80"]
    networks: [front]
  api:
    image: api
    expose: ["8080"]
    networks: [front, back]
  db:
    image: postgres
    networks: [back]
  cache:
    image: redis
networks:
  front: {}
  back: {internal: true}
"#;

#[test]
fn split_networks_isolate_and_internal_limits_egress() {
    let objects = render_compose(SPLIT, true);
    let truth = ComposeTruth {
        networks: BTreeMap::from([
            ("proxy".into(), BTreeSet::from(["front".into()])),
            (
                "api".into(),
                BTreeSet::from(["front".into(), "back".into()]),
            ),
            ("db".into(), BTreeSet::from(["back".into()])),
            ("cache".into(), BTreeSet::from(["default".into()])),
        ]),
        internal: BTreeSet::from(["back".into()]),
        network_mode: BTreeSet::new(),
    };
    let mut tally = Tally::default();
    check_file("split", &objects, &truth, &mut tally);
    check_published("split", &objects);
    // proxy↔api, api↔db allowed; the rest denied; db alone is egress-limited.
    assert_eq!(
        (tally.allowed, tally.denied, tally.egress_limited),
        (4, 8, 1),
        "{tally:?}"
    );
    let (cluster, pods) = cluster_of(&objects);
    assert!(cluster.can_reach(&outsider(), &pods["proxy"], "TCP", 80));
    assert!(!cluster.can_reach(&outsider(), &pods["db"], "TCP", 5432));
    assert!(!cluster.can_reach(&pods["db"], &pods["proxy"], "TCP", 80));
}

#[test]
fn network_policies_false_leaves_every_pod_reachable() {
    let objects = render_compose(SPLIT, false);
    let (cluster, pods) = cluster_of(&objects);
    assert!(cluster.policies.is_empty());
    assert!(cluster.can_reach(&pods["proxy"], &pods["db"], "TCP", 5432));
    assert!(cluster.can_reach(&outsider(), &pods["db"], "TCP", 5432));
}

#[test]
fn the_evaluator_follows_the_api_reference() {
    // Not selected by any policy: open. Selected with only Ingress: egress open.
    let pod = |ns: &str, labels: &[(&str, &str)]| Pod {
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        named_ports: BTreeMap::from([("http".into(), ("TCP".into(), 80))]),
    };
    let a = pod("n", &[("app", "a")]);
    let b = pod("n", &[("app", "b")]);
    let c = pod("other", &[("app", "a")]);
    let cluster = Cluster {
        namespace_labels: BTreeMap::new(),
        policies: vec![json!({
            "metadata": {"namespace": "n"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}], "ports": [{"port": "http"}]}]
            }
        })],
    };
    assert!(cluster.can_reach(&b, &a, "TCP", 1));
    assert!(cluster.can_reach(&a, &b, "TCP", 80));
    assert!(!cluster.can_reach(&a, &b, "TCP", 81));
    assert!(!cluster.can_reach(&a, &b, "UDP", 80));
    // A bare podSelector peer is the policy's own namespace only.
    assert!(!cluster.can_reach(&c, &b, "TCP", 80));
}
