//! The fields of a pod that only a scheduler reads, checked as the API server checks them:
//! the operators and values of the required node affinity, and its terms; the terms of the
//! required pod (anti-)affinity. Whether the pod fits this node is the kubelet's decision
//! (machined's `placement`), against labels the config can change and the pods it runs.

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};

use super::validate::Checker;

/// Checks `spec`'s node affinity; problem paths start with `path` (`...spec`).
pub(super) fn check(c: &mut Checker, spec: &PodSpec, path: &str) {
    let node_affinity = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
    let path = format!("{path}.affinity.nodeAffinity");
    if let Some(required) =
        node_affinity.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
    {
        let path = format!("{path}.requiredDuringSchedulingIgnoredDuringExecution");
        let terms = &required.node_selector_terms;
        c.check(!terms.is_empty(), format!("{path}.nodeSelectorTerms"), || {
            "needs at least one term".to_string()
        });
        for (i, term) in terms.iter().enumerate() {
            check_term(c, term, &format!("{path}.nodeSelectorTerms[{i}]"));
        }
    }
    let affinity = spec.affinity.as_ref();
    let pod_terms = [
        (
            "podAffinity",
            affinity
                .and_then(|a| a.pod_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()),
        ),
        (
            "podAntiAffinity",
            affinity
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()),
        ),
    ];
    for (field, terms) in pod_terms {
        for (i, term) in terms.unwrap_or_default().iter().enumerate() {
            let affinity_path = path.trim_end_matches(".nodeAffinity");
            let at = format!(
                "{affinity_path}.{field}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"
            );
            c.check(!term.topology_key.is_empty(), format!("{at}.topologyKey"), || {
                "is required".to_string()
            });
            let selector = term.label_selector.as_ref();
            for (j, expression) in
                selector.iter().flat_map(|s| s.match_expressions.iter().flatten()).enumerate()
            {
                let operator = expression.operator.as_str();
                let at = format!("{at}.labelSelector.matchExpressions[{j}]");
                let values = expression.values.as_deref().unwrap_or_default();
                match operator {
                    "In" | "NotIn" => c.check(!values.is_empty(), format!("{at}.values"), || {
                        format!("{operator} needs at least one value")
                    }),
                    "Exists" | "DoesNotExist" => {
                        c.check(values.is_empty(), format!("{at}.values"), || {
                            format!("{operator} takes no values")
                        })
                    }
                    _ => c.fail(
                        format!("{at}.operator"),
                        format!("{operator:?} is not In, NotIn, Exists or DoesNotExist"),
                    ),
                }
            }
        }
    }
    let preferred = node_affinity
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref());
    for (i, term) in preferred.unwrap_or_default().iter().enumerate() {
        let at = format!("{path}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        c.check((1..=100).contains(&term.weight), format!("{at}.weight"), || {
            format!("{} is outside 1..100", term.weight)
        });
        check_term(c, &term.preference, &format!("{at}.preference"));
    }
}

/// Checks a node selector term: its requirements on labels, then on fields.
fn check_term(c: &mut Checker, term: &NodeSelectorTerm, path: &str) {
    let expressions = term.match_expressions.as_deref();
    requirements(c, expressions, false, &format!("{path}.matchExpressions"));
    requirements(c, term.match_fields.as_deref(), true, &format!("{path}.matchFields"));
}

/// Checks a term's requirements: on labels, or (`fields`) on `metadata.name`, which takes
/// only `In` and `NotIn` with one value.
fn requirements(
    c: &mut Checker,
    requirements: Option<&[NodeSelectorRequirement]>,
    fields: bool,
    path: &str,
) {
    for (i, requirement) in requirements.unwrap_or_default().iter().enumerate() {
        let at = format!("{path}[{i}]");
        let values = requirement.values.as_deref().unwrap_or_default();
        let operator = requirement.operator.as_str();
        if fields {
            let key = &requirement.key;
            c.check(key == "metadata.name", format!("{at}.key"), || {
                format!("{key:?} is not a field a node is selected by (metadata.name is)")
            });
            c.check(matches!(operator, "In" | "NotIn"), format!("{at}.operator"), || {
                format!("{operator:?} is not In or NotIn, the operators of fields")
            });
            c.check(values.len() == 1, format!("{at}.values"), || {
                "must hold exactly one node name".to_string()
            });
            continue;
        }
        let problem = match operator {
            "In" | "NotIn" if values.is_empty() => {
                Some("needs at least one value with In and NotIn")
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                Some("must be empty with Exists and DoesNotExist")
            }
            "Gt" | "Lt" if values.len() != 1 || values[0].parse::<i64>().is_err() => {
                Some("must be one integer with Gt and Lt")
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" | "Gt" | "Lt" => None,
            _ => {
                c.fail(
                    format!("{at}.operator"),
                    format!("{operator:?} is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt"),
                );
                None
            }
        };
        if let Some(problem) = problem {
            c.fail(format!("{at}.values"), problem);
        }
    }
}
