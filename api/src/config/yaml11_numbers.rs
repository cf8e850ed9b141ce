//! Numbers in pods read as the API server reads them (its YAML is YAML 1.1), where serde_yaml
//! (YAML 1.2) reads them otherwise:
//!
//! - unquoted decimal quantities (`cpu: 0.15`, `cpu: .5`, `memory: 1e9`): the number as
//!   written. k8s-openapi's `Quantity` takes strings and integers but not floats, so such a
//!   manifest, which `kubectl apply` accepts, failed to parse with one error that hid every
//!   other problem in the file. These scalars are quoted.
//! - octal file modes (`defaultMode: 0644`, `mode: 0400`), which YAML 1.2 reads as strings:
//!   written in decimal.
//!
//! Before serde reads the document, these scalars are rewritten in its text, in place: no line
//! moves, so serde's errors still name the lines as written.

use std::borrow::Cow;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Where the pods are in a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pods {
    /// The document is one Pod (a manifest file).
    Document,
    /// Under `machine.pods` and `machine.objects` (a machine config).
    MachinePods,
}

impl Pods {
    /// The keys from the pod down to a value at `keys` (the mapping keys from the document's
    /// root down to the value; sequences add none); None outside pods.
    fn in_pod(self, keys: &[String]) -> Option<&[String]> {
        match self {
            Pods::Document => Some(keys),
            Pods::MachinePods => match keys {
                [machine, list, rest @ ..]
                    if machine == "machine" && (list == "pods" || list == "objects") =>
                {
                    Some(rest)
                }
                _ => None,
            },
        }
    }

    /// Whether a value at `keys` is a pod's quantity: a resource list's values (a container's
    /// or the pod's limits and requests, an ephemeral volume claim's, the pod's overhead) or
    /// an emptyDir's size limit.
    fn holds_quantity(self, keys: &[String]) -> bool {
        match self.in_pod(keys) {
            Some([.., list, _]) if matches!(list.as_str(), "limits" | "requests" | "overhead") => {
                true
            }
            Some([.., last]) => last == "sizeLimit",
            _ => false,
        }
    }

    /// Whether a value at `keys` is a file mode of a pod's volume (`defaultMode`, an item's
    /// `mode`), not a key of the same name elsewhere (a ConfigMap's data).
    fn holds_mode(self, keys: &[String]) -> bool {
        match self.in_pod(keys) {
            Some([.., volumes, _, last]) if volumes == "volumes" => last == "defaultMode",
            Some([.., volumes, _, items, last]) if volumes == "volumes" => {
                items == "items" && last == "mode"
            }
            _ => false,
        }
    }
}

/// `text` with each unquoted decimal number at a pod's quantity quoted and each octal mode
/// in decimal; borrowed when there is none. A document the YAML parser refuses is returned as
/// it is, for serde to explain.
pub fn rewritten(text: &str, pods: Pods) -> Cow<'_, str> {
    let spans = spans(text, pods);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 2 * spans.len());
    let mut copied = 0;
    for (start, end, replacement) in spans {
        out.push_str(&text[copied..start]);
        out.push_str(&replacement);
        copied = end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// One level of the document as the events walk it.
enum Level {
    /// A mapping, with the key whose value is being read (None while a key is expected).
    Mapping(Option<String>),
    Sequence,
}

/// The byte spans of the plain scalars to rewrite, each with what it becomes.
fn spans(text: &str, pods: Pods) -> Vec<(usize, usize, String)> {
    let mut parser = Parser::new_from_str(text);
    let mut levels: Vec<Level> = Vec::new();
    let mut spans = Vec::new();
    loop {
        let Ok((event, mark)) = parser.next_token() else { return Vec::new() };
        match event {
            Event::StreamEnd => return spans,
            Event::MappingStart(..) => levels.push(Level::Mapping(None)),
            Event::SequenceStart(..) => levels.push(Level::Sequence),
            Event::MappingEnd | Event::SequenceEnd => {
                levels.pop();
                value_read(&mut levels);
            }
            Event::Scalar(value, style, ..) => {
                if let Some(Level::Mapping(key @ None)) = levels.last_mut() {
                    *key = Some(value);
                    continue;
                }
                let (start, end) = (mark.index(), mark.index() + value.len());
                if style == TScalarStyle::Plain && text.get(start..end) == Some(value.as_str()) {
                    let keys = keys(&levels);
                    if is_float(&value) && pods.holds_quantity(&keys) {
                        spans.push((start, end, format!("\"{value}\"")));
                    } else if let Some(mode) = octal(&value).filter(|_| pods.holds_mode(&keys)) {
                        spans.push((start, end, mode.to_string()));
                    }
                }
                value_read(&mut levels);
            }
            _ => {}
        }
    }
}

/// A value was read: the mapping that holds it expects its next key.
fn value_read(levels: &mut [Level]) {
    if let Some(Level::Mapping(key)) = levels.last_mut() {
        *key = None;
    }
}

/// The mapping keys from the root down.
fn keys(levels: &[Level]) -> Vec<String> {
    levels
        .iter()
        .filter_map(|level| match level {
            Level::Mapping(key) => key.clone(),
            Level::Sequence => None,
        })
        .collect()
}

/// The value of a YAML 1.1 octal integer (`0644`), which YAML 1.2 reads as a string.
fn octal(value: &str) -> Option<u32> {
    let digits = value.strip_prefix('0').filter(|d| !d.is_empty())?;
    u32::from_str_radix(digits, 8).ok()
}

/// Whether a plain scalar reads as a float and not as an integer (which `Quantity` takes).
fn is_float(value: &str) -> bool {
    value.parse::<i128>().is_err() && value.parse::<f64>().is_ok_and(f64::is_finite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_decimal_quantities_in_place_and_nothing_else() {
        let config = concat!(
            "machine:\n",
            "  sysctls: {vm.x: 0.5}\n",
            "  pods:\n",
            "    - spec:\n",
            "        containers:\n",
            "          - name: a\n",
            "            resources:\n",
            "              limits: {cpu: 0.15, memory: 1e9}\n",
            "              requests:\n",
            "                cpu: .5 # half\n",
            "                memory: 128974848\n",
            "            readinessProbe: {periodSeconds: 2.5}\n",
            "        overhead: {cpu: 0.25}\n",
            "        volumes: [{name: v, emptyDir: {sizeLimit: 1.5e3}}]\n",
            "    - spec: {containers: [{name: b, resources: {limits: {cpu: '0.2'}}}]}\n",
        );
        let got = rewritten(config, Pods::MachinePods);
        let want = config
            .replace("cpu: 0.15", "cpu: \"0.15\"")
            .replace("memory: 1e9", "memory: \"1e9\"")
            .replace("cpu: .5", "cpu: \".5\"")
            .replace("cpu: 0.25", "cpu: \"0.25\"")
            .replace("sizeLimit: 1.5e3", "sizeLimit: \"1.5e3\"");
        assert_eq!(got, want);
        // The same pod as a manifest of its own.
        let pod = "spec:\n  containers:\n    - resources: {limits: {cpu: 0.15}}\n";
        assert_eq!(rewritten(pod, Pods::Document), pod.replace("0.15", "\"0.15\""));
        assert_eq!(rewritten(pod, Pods::MachinePods), pod);
    }

    #[test]
    fn octal_modes_are_written_in_decimal() {
        let pod = concat!(
            "spec:\n",
            "  volumes:\n",
            "    - {name: a, configMap: {name: c, defaultMode: 0644, items: [{key: k, path: p, mode: 0400}]}}\n",
            "    - {name: b, secret: {secretName: s, defaultMode: 420}}\n",
            "    - {name: c, secret: {secretName: s, defaultMode: 0o600}}\n",
            "    - {name: d, secret: {secretName: s, defaultMode: '0600'}}\n",
            "  containers: [{name: c, env: [{name: mode, value: '0644'}], args: [0755]}]\n",
        );
        let want = pod.replace("0644, items", "420, items").replace("0400", "256");
        assert_eq!(rewritten(pod, Pods::Document), want);
        // A key of that name elsewhere is data, as written.
        let map = "kind: ConfigMap\ndata: {mode: 0644, defaultMode: 0600}\n";
        assert_eq!(rewritten(map, Pods::Document), map);
        // The config's objects are read as its pods are.
        let config = "machine:\n  objects:\n    - spec: {template: {spec: {volumes: [{name: v, secret: {defaultMode: 0400}}]}}}\n";
        assert_eq!(rewritten(config, Pods::MachinePods), config.replace("0400", "256"));
    }

    #[test]
    fn leaves_documents_without_any_alone() {
        let text = "machine:\n  pods: [{spec: {containers: [{resources: {limits: {cpu: 1}}}]}}]\n";
        assert!(matches!(rewritten(text, Pods::MachinePods), Cow::Borrowed(_)));
        let broken = "machine: [\n  cpu: 0.5";
        assert!(matches!(rewritten(broken, Pods::MachinePods), Cow::Borrowed(_)));
    }
}
