//! Unquoted decimal quantities in pods (`cpu: 0.15`, `cpu: .5`, `memory: 1e9`), read as the
//! API server reads them: the number as written. k8s-openapi's `Quantity` takes strings and
//! integers but not floats, so such a manifest, which `kubectl apply` accepts, failed to parse
//! with one error that hid every other problem in the file. Before serde reads the document,
//! these scalars are quoted in its text, in place: no line moves, so serde's errors still name
//! the lines as written.

use std::borrow::Cow;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Where the pods are in a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pods {
    /// The document is one Pod (a manifest file).
    Document,
    /// Under `machine.pods` (a machine config).
    MachinePods,
}

impl Pods {
    /// Whether a value at `keys` (the mapping keys from the document's root down to the
    /// value; sequences add none) is a pod's quantity.
    fn holds_quantity(self, keys: &[String]) -> bool {
        let in_pod = match self {
            Pods::Document => keys,
            Pods::MachinePods => match keys {
                [machine, pods, rest @ ..] if machine == "machine" && pods == "pods" => rest,
                _ => return false,
            },
        };
        // A resource list's values (a container's or the pod's limits and requests, an
        // ephemeral volume claim's, the pod's overhead) and an emptyDir's size limit.
        match in_pod {
            [.., list, _] if matches!(list.as_str(), "limits" | "requests" | "overhead") => true,
            [.., last] => last == "sizeLimit",
            [] => false,
        }
    }
}

/// `text` with each unquoted decimal number at a pod's quantity quoted; borrowed when there is
/// none. A document the YAML parser refuses is returned as it is, for serde to explain.
pub fn quoted(text: &str, pods: Pods) -> Cow<'_, str> {
    let spans = float_spans(text, pods);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 2 * spans.len());
    let mut copied = 0;
    for (start, end) in spans {
        out.push_str(&text[copied..start]);
        out.push('"');
        out.push_str(&text[start..end]);
        out.push('"');
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

/// The byte spans of the plain scalars that read as floats at pods' quantities.
fn float_spans(text: &str, pods: Pods) -> Vec<(usize, usize)> {
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
                if style == TScalarStyle::Plain
                    && is_float(&value)
                    && text.get(start..end) == Some(value.as_str())
                    && pods.holds_quantity(&keys(&levels))
                {
                    spans.push((start, end));
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
        let got = quoted(config, Pods::MachinePods);
        let want = config
            .replace("cpu: 0.15", "cpu: \"0.15\"")
            .replace("memory: 1e9", "memory: \"1e9\"")
            .replace("cpu: .5", "cpu: \".5\"")
            .replace("cpu: 0.25", "cpu: \"0.25\"")
            .replace("sizeLimit: 1.5e3", "sizeLimit: \"1.5e3\"");
        assert_eq!(got, want);
        // The same pod as a manifest of its own.
        let pod = "spec:\n  containers:\n    - resources: {limits: {cpu: 0.15}}\n";
        assert_eq!(quoted(pod, Pods::Document), pod.replace("0.15", "\"0.15\""));
        assert_eq!(quoted(pod, Pods::MachinePods), pod);
    }

    #[test]
    fn leaves_documents_without_any_alone() {
        let text = "machine:\n  pods: [{spec: {containers: [{resources: {limits: {cpu: 1}}}]}}]\n";
        assert!(matches!(quoted(text, Pods::MachinePods), Cow::Borrowed(_)));
        let broken = "machine: [\n  cpu: 0.5";
        assert!(matches!(quoted(broken, Pods::MachinePods), Cow::Borrowed(_)));
    }
}
