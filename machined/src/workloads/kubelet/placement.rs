//! Whether a pod may run on this node, as the scheduler would decide for a cluster of one:
//! `nodeName`, `nodeSelector` and the required node affinity, against the node's labels
//! (`kubernetes.io/os`, `kubernetes.io/arch`, `kubernetes.io/hostname`, their old `beta.`
//! forms, and the config's `machine.kubelet.nodeLabels`). The fields that only rank nodes
//! (preferred affinities, priorities, spread constraints) choose nothing among one node, and
//! this node has no taints for tolerations to tolerate. The required pod (anti-)affinity is
//! weighed against the pods placed here: with one node, every pod shares each topology
//! domain the node has a label for. Like the scheduler, this is decided once, before the pod
//! starts: a running pod is not evicted when the labels change.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm};

use cairn_api::config::objects::selects;

use cairn_api::arch::Arch;
use cairn_api::oci::Platform;

use super::source::DesiredPod;

/// What the scheduler knows of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its name: the host name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// The node named `hostname`, of `arch`, with the config's `extra` labels.
    pub fn new(hostname: &str, arch: Arch, extra: &BTreeMap<String, String>) -> Node {
        let arch = Platform::of(arch).architecture;
        let mut labels = extra.clone();
        for prefix in ["kubernetes.io", "beta.kubernetes.io"] {
            labels.insert(format!("{prefix}/os"), "linux".into());
            labels.insert(format!("{prefix}/arch"), arch.clone());
        }
        labels.insert("kubernetes.io/hostname".into(), hostname.into());
        Node { name: hostname.into(), labels }
    }

    /// Why `pod` cannot run here, in the scheduler's words; `None` when it can.
    pub fn refuses(&self, pod: &Pod) -> Option<String> {
        let spec = pod.spec.as_ref()?;
        if let Some(bound) = spec.node_name.as_deref().filter(|name| *name != self.name) {
            return Some(format!(
                "the pod is bound to node {bound:?}; this node is {:?}",
                self.name
            ));
        }
        let selected = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(key, value)| self.labels.get(key) == Some(value));
        let terms = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|selector| &selector.node_selector_terms);
        // The terms are ORed; no required affinity at all is no constraint.
        let affine = terms.is_none_or(|terms| terms.iter().any(|term| self.matches(term)));
        (!selected || !affine).then(|| {
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector".into()
        })
    }

    /// Why `pod` cannot run beside pods holding the host ports `taken`, in the scheduler's
    /// words (a Deployment's second replica with a hostPort, two pods on one port); `None`
    /// when none of its ports is taken.
    pub fn port_conflict(pod: &Pod, taken: &HashSet<HostPort>) -> Option<String> {
        host_ports(pod).iter().any(|port| taken.contains(port)).then(|| {
            "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod \
             ports"
                .into()
        })
    }

    /// Why `pod` (in `namespace`) cannot run beside the pods `placed` here (each with its
    /// namespace), by the required pod affinity and anti-affinity of either, in the
    /// scheduler's words; `None` when it can.
    pub fn affinity_conflict(
        &self,
        (namespace, pod): (&str, &Pod),
        placed: &[(String, Pod)],
    ) -> Option<String> {
        let shared = |term: &PodAffinityTerm| self.labels.contains_key(&term.topology_key);
        let repels = required_terms(pod, true).any(|term| {
            shared(term)
                && placed.iter().any(|(ns, other)| term_selects(term, namespace, (ns, other)))
        });
        // The pods here that repel it, as the scheduler weighs existing pods' anti-affinity.
        let repelled = placed.iter().any(|(ns, other)| {
            required_terms(other, true)
                .any(|term| shared(term) && term_selects(term, ns, (namespace, pod)))
        });
        if repels || repelled {
            return Some(
                "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules".into(),
            );
        }
        // Terms no pod here meets still let in the first pod that meets them all itself (a
        // workload's first replica), when no pod here meets any of them, as upstream.
        let terms: Vec<&PodAffinityTerm> = required_terms(pod, false).collect();
        let met = |term: &&PodAffinityTerm| {
            placed.iter().any(|(ns, other)| term_selects(term, namespace, (ns, other)))
        };
        let first = !terms.iter().any(met)
            && terms.iter().all(|term| term_selects(term, namespace, (namespace, pod)));
        let attracted = terms.iter().all(|term| shared(term) && (met(term) || first));
        (!attracted)
            .then(|| "0/1 nodes are available: 1 node(s) didn't match pod affinity rules".into())
    }

    /// Whether a node selector term (its requirements ANDed) selects this node. A term with
    /// no requirements selects nothing, as in Kubernetes.
    fn matches(&self, term: &NodeSelectorTerm) -> bool {
        let expressions = term.match_expressions.iter().flatten();
        let fields = term.match_fields.iter().flatten();
        let mut any = false;
        for (requirement, value) in expressions
            .map(|r| (r, self.labels.get(&r.key).map(String::as_str)))
            .chain(fields.map(|r| (r, (r.key == "metadata.name").then_some(self.name.as_str()))))
        {
            any = true;
            if !satisfies(requirement, value) {
                return false;
            }
        }
        any
    }
}

/// Whether a label (or field) whose value here is `value` satisfies `requirement`.
fn satisfies(requirement: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    let number = |text: &str| text.parse::<i64>().ok();
    let compare = |ordering: std::cmp::Ordering| {
        let bound = values.first().and_then(|v| number(v));
        matches!((value.and_then(number), bound), (Some(v), Some(b)) if v.cmp(&b) == ordering)
    };
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|allowed| allowed == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|refused| refused == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => compare(std::cmp::Ordering::Greater),
        "Lt" => compare(std::cmp::Ordering::Less),
        // Validation refuses other operators; an unknown one selects nothing.
        _ => false,
    }
}

/// The required terms of `pod`'s anti-affinity (`anti`) or affinity.
fn required_terms(pod: &Pod, anti: bool) -> impl Iterator<Item = &PodAffinityTerm> {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let terms = match anti {
        true => affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
        false => affinity
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
    };
    terms.into_iter().flatten()
}

/// Whether `term` of a pod in `namespace` selects `other` (in its namespace): in the term's
/// namespaces (the pod's own when it names none), with labels its selector selects (a term
/// without a selector selects no pod, as upstream).
fn term_selects(
    term: &PodAffinityTerm,
    namespace: &str,
    (other_namespace, other): (&str, &Pod),
) -> bool {
    let namespaces = term.namespaces.as_deref().unwrap_or_default();
    let in_namespace = match namespaces {
        [] => other_namespace == namespace,
        named => named.iter().any(|n| n == other_namespace),
    };
    let labels = other.metadata.labels.clone().unwrap_or_default();
    in_namespace && term.label_selector.as_ref().is_some_and(|s| selects(s, &labels))
}

/// A port a pod takes on the node: its number and protocol.
pub type HostPort = (i32, String);

/// The node's ports `pod` takes: its containers' host ports, and on the node's network every
/// container port (which is then a host port, as upstream counts it).
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else { return Vec::new() };
    let host_network = spec.host_network == Some(true);
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|port| {
            let number = match port.host_port.filter(|p| *p > 0) {
                Some(host) => host,
                None if host_network => port.container_port,
                None => return None,
            };
            Some((number, port.protocol.clone().unwrap_or_else(|| "TCP".into())))
        })
        .collect()
}

/// Why each pod of `desired` (by `namespace/name`) that is not placed yet cannot run here, in
/// the scheduler's words: its node selection, its host ports or its pod (anti-)affinity,
/// against the pods placed before it. The pods whose uids are in `placed` keep their place,
/// as a bound pod does: their ports stay theirs and they count for others' affinity. Those
/// whose uids are in `ended` (they ended for good, their sandboxes stopped) are neither
/// placed nor counted, as the scheduler counts no pod that ended. The others are placed in
/// name order.
pub fn unplaceable(
    node: &Node,
    desired: &BTreeMap<String, DesiredPod>,
    placed: &HashSet<String>,
    ended: &HashSet<String>,
) -> BTreeMap<String, String> {
    let holds = |pod: &&DesiredPod| placed.contains(&pod.uid) && !ended.contains(&pod.uid);
    let mut taken: HashSet<HostPort> =
        desired.values().filter(holds).flat_map(|pod| host_ports(&pod.pod)).collect();
    let mut beside: Vec<(String, Pod)> = desired
        .values()
        .filter(holds)
        .map(|pod| (pod.namespace.clone(), pod.pod.clone()))
        .collect();
    let mut refused = BTreeMap::new();
    let waits = |pod: &DesiredPod| !placed.contains(&pod.uid) && !ended.contains(&pod.uid);
    for (key, pod) in desired.iter().filter(|(_, pod)| waits(pod)) {
        let reason = node
            .refuses(&pod.pod)
            .or_else(|| Node::port_conflict(&pod.pod, &taken))
            .or_else(|| node.affinity_conflict((&pod.namespace, &pod.pod), &beside));
        match reason {
            Some(reason) => _ = refused.insert(key.clone(), reason),
            None => {
                taken.extend(host_ports(&pod.pod));
                beside.push((pod.namespace.clone(), pod.pod.clone()));
            }
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        let extra = BTreeMap::from([("zone".to_string(), "shed-3".to_string())]);
        Node::new("cairn-1", Arch::Arm64, &extra)
    }

    fn pod(spec: &str) -> Pod {
        serde_yaml::from_str(&format!("metadata: {{name: p}}\nspec:\n  containers: []\n{spec}"))
            .unwrap()
    }

    #[test]
    fn the_node_has_the_labels_kubernetes_gives_a_node() {
        let labels = node().labels;
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["beta.kubernetes.io/arch"], "arm64");
        assert_eq!(labels["kubernetes.io/hostname"], "cairn-1");
        assert_eq!(labels["zone"], "shed-3");
        assert_eq!(
            Node::new("n", Arch::Armv7, &BTreeMap::new()).labels["kubernetes.io/arch"],
            "arm"
        );
    }

    #[test]
    fn host_ports_are_taken_once() {
        let web = pod("  containers: [{name: c, ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 53, hostPort: 53, protocol: UDP}]}]");
        let host =
            pod("  hostNetwork: true\n  containers: [{name: c, ports: [{containerPort: 8080}]}]");
        let inside = pod("  containers: [{name: c, ports: [{containerPort: 8080}]}]");
        assert_eq!(host_ports(&web), [(8080, "TCP".to_string()), (53, "UDP".to_string())]);
        assert_eq!(host_ports(&host), [(8080, "TCP".to_string())]);
        assert!(host_ports(&inside).is_empty());
        let taken: HashSet<HostPort> = host_ports(&web).into_iter().collect();
        let conflict = Node::port_conflict(&host, &taken).unwrap();
        assert!(conflict.ends_with("didn't have free ports for the requested pod ports"));
        assert_eq!(Node::port_conflict(&inside, &taken), None);
        let udp_only: HashSet<HostPort> = [(8080, "UDP".to_string())].into();
        assert_eq!(Node::port_conflict(&web, &udp_only), None);
    }

    #[test]
    fn pods_placed_keep_their_ports_until_they_end() {
        let web = |name: &str, port: i32| {
            let yaml = format!(
                "metadata: {{name: {name}}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: 80, hostPort: {port}}}]}}]}}"
            );
            let pod = DesiredPod::new("config", serde_yaml::from_str(&yaml).unwrap()).unwrap();
            (pod.key(), pod)
        };
        let desired = BTreeMap::from([web("a", 8080), web("b", 8080), web("c", 9090)]);
        let uid = |key: &str| desired[key].uid.clone();
        let nothing = HashSet::new();
        // Placed first in name order: b waits for a's port.
        let refused = unplaceable(&node(), &desired, &nothing, &nothing);
        assert_eq!(refused.keys().collect::<Vec<_>>(), ["default/b"]);
        // b placed already keeps the port; a, not placed yet, waits.
        let b = HashSet::from([uid("default/b")]);
        let refused = unplaceable(&node(), &desired, &b, &nothing);
        assert_eq!(refused.keys().collect::<Vec<_>>(), ["default/a"]);
        // Once b ended, its port is free for a; and a pod that ended is not placed again
        // (after a restart of the kubelet, when it is not placed).
        assert!(unplaceable(&node(), &desired, &b, &b).is_empty());
        assert!(unplaceable(&node(), &desired, &nothing, &b).is_empty());
    }

    #[test]
    fn node_selectors_need_every_label() {
        let node = node();
        assert_eq!(node.refuses(&pod("")), None);
        assert_eq!(
            node.refuses(&pod("  nodeSelector: {kubernetes.io/os: linux, zone: shed-3}")),
            None
        );
        let refused = node.refuses(&pod("  nodeSelector: {kubernetes.io/os: linux, gpu: \"yes\"}"));
        assert_eq!(
            refused.unwrap(),
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"
        );
        assert!(node.refuses(&pod("  nodeSelector: {kubernetes.io/arch: amd64}")).is_some());
    }

    #[test]
    fn a_pod_bound_to_another_node_does_not_run() {
        let node = node();
        assert_eq!(node.refuses(&pod("  nodeName: cairn-1")), None);
        assert_eq!(
            node.refuses(&pod("  nodeName: other")).unwrap(),
            "the pod is bound to node \"other\"; this node is \"cairn-1\""
        );
    }

    fn required(terms: &str) -> Pod {
        pod(&format!(
            "  affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: {terms}}}}}}}"
        ))
    }

    #[test]
    fn required_node_affinity_terms_are_ored_and_their_requirements_anded() {
        let node = node();
        let fits = |terms: &str| node.refuses(&required(terms)).is_none();
        assert!(fits("[{matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}]}]"));
        assert!(!fits(
            "[{matchExpressions: [{key: kubernetes.io/arch, operator: NotIn, values: [arm64]}]}]"
        ));
        assert!(fits("[{matchExpressions: [{key: gpu, operator: NotIn, values: [a]}, {key: zone, operator: Exists}]}]"));
        assert!(!fits("[{matchExpressions: [{key: zone, operator: DoesNotExist}]}]"));
        assert!(fits("[{matchExpressions: [{key: gpu, operator: Exists}]}, {matchFields: [{key: metadata.name, operator: In, values: [cairn-1]}]}]"));
        assert!(!fits(
            "[{matchFields: [{key: metadata.name, operator: NotIn, values: [cairn-1]}]}]"
        ));
        // An empty term selects nothing.
        assert!(!fits("[{}]"));
    }

    fn labelled(name: &str, labels: &str, spec: &str) -> Pod {
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, labels: {labels}}}\nspec:\n  containers: []\n{spec}"
        ))
        .unwrap()
    }

    #[test]
    fn required_anti_affinity_keeps_a_second_replica_off_the_one_node() {
        let node = node();
        let term =
            "[{labelSelector: {matchLabels: {app: zk}}, topologyKey: kubernetes.io/hostname}]";
        let zk = |name: &str| {
            labelled(name, "{app: zk}", &format!("  affinity: {{podAntiAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {term}}}}}"))
        };
        assert_eq!(node.affinity_conflict(("default", &zk("zk-0")), &[]), None);
        let placed = vec![("default".to_string(), zk("zk-0"))];
        let refused = node.affinity_conflict(("default", &zk("zk-1")), &placed).unwrap();
        assert!(refused.ends_with("didn't match pod anti-affinity rules"), "{refused}");
        // Another namespace's pods are not its business; a plain pod is kept off by zk-0's.
        assert_eq!(node.affinity_conflict(("other", &zk("zk-1")), &placed), None);
        let plain = labelled("web", "{app: zk}", "");
        assert!(node.affinity_conflict(("default", &plain), &placed).is_some());
        // A topology the node has no label for puts no two pods together.
        let zoned = labelled("zk-9", "{app: zk}", "  affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: zk}}, topologyKey: rack}]}}");
        assert_eq!(node.affinity_conflict(("other", &zoned), &placed), None);
    }

    #[test]
    fn required_affinity_needs_a_matching_pod_here_or_itself() {
        let node = node();
        let term =
            "[{labelSelector: {matchLabels: {app: cache}}, topologyKey: kubernetes.io/hostname}]";
        let spec = format!("  affinity: {{podAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: {term}}}}}");
        let web = labelled("web", "{app: web}", &spec);
        let refused = node.affinity_conflict(("default", &web), &[]).unwrap();
        assert!(refused.ends_with("didn't match pod affinity rules"), "{refused}");
        let placed = vec![("default".to_string(), labelled("cache", "{app: cache}", ""))];
        assert_eq!(node.affinity_conflict(("default", &web), &placed), None);
        // The first pod that meets its own term runs.
        let cache = labelled("cache-0", "{app: cache}", &spec);
        assert_eq!(node.affinity_conflict(("default", &cache), &[]), None);
        // Not when another of its terms is met here and this one is not, as upstream.
        let both = "  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: cache}}, topologyKey: kubernetes.io/hostname}, {labelSelector: {matchLabels: {tier: db}}, topologyKey: kubernetes.io/hostname}]}}";
        let selfish = labelled("cache-1", "{app: cache, tier: db}", both);
        let db_here = vec![("default".to_string(), labelled("db", "{tier: db}", ""))];
        assert!(node.affinity_conflict(("default", &selfish), &db_here).is_some());
        assert_eq!(node.affinity_conflict(("default", &selfish), &[]), None);
    }

    #[test]
    fn gt_and_lt_compare_integers() {
        let extra = BTreeMap::from([("cores".to_string(), "4".to_string())]);
        let node = Node::new("n", Arch::X86_64, &extra);
        let fits = |op: &str, value: &str| {
            let terms = format!(
                "[{{matchExpressions: [{{key: cores, operator: {op}, values: [\"{value}\"]}}]}}]"
            );
            node.refuses(&required(&terms)).is_none()
        };
        assert!(fits("Gt", "2") && !fits("Gt", "4") && fits("Lt", "10") && !fits("Lt", "4"));
        assert!(!fits("Gt", "many"));
    }
}
