//! Kubernetes objects a node keeps for its pods (`machine.objects`): ConfigMaps and Secrets,
//! which pods read as volumes and environment variables, with no API server. They are
//! decoded as strictly as pods: a field Kubernetes does not know, or one Cairn does not keep,
//! is refused with its path; names, keys and sizes follow the API server's rules.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml::Value;

use super::pod::{check_fields, is_object_name, Supported, DEFAULT_NAMESPACE};
use super::validate::Checker;

/// The most data one object holds, as the API server limits it (etcd's value size).
pub const MAX_OBJECT_BYTES: usize = 1 << 20;

/// One object of `machine.objects`, by its `kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalObject {
    /// A ConfigMap (`apiVersion: v1`).
    ConfigMap(ConfigMap),
    /// A Secret (`apiVersion: v1`).
    Secret(Secret),
}

/// The kinds [`LocalObject`] holds, for messages.
const KINDS: &str = "ConfigMap, Secret";

impl LocalObject {
    /// `kind`, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            LocalObject::ConfigMap(_) => "ConfigMap",
            LocalObject::Secret(_) => "Secret",
        }
    }

    /// Its metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            LocalObject::ConfigMap(object) => &object.metadata,
            LocalObject::Secret(object) => &object.metadata,
        }
    }

    /// `metadata.namespace`, [`DEFAULT_NAMESPACE`] when absent.
    pub fn namespace(&self) -> &str {
        self.metadata().namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// `metadata.name` (required: validation refuses an object without one).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The fields Cairn keeps of this kind.
    fn supported(&self) -> &'static Supported {
        match self {
            LocalObject::ConfigMap(_) => &CONFIG_MAP,
            LocalObject::Secret(_) => &SECRET,
        }
    }

    /// The object's keys and the size of each value.
    fn entries(&self) -> Vec<(&str, usize)> {
        fn sizes<V>(
            map: &Option<BTreeMap<String, V>>,
            size: fn(&V) -> usize,
        ) -> Vec<(&str, usize)> {
            map.iter().flatten().map(|(k, v)| (k.as_str(), size(v))).collect()
        }
        let text = |v: &String| v.len();
        let bytes = |v: &k8s_openapi::ByteString| v.0.len();
        match self {
            LocalObject::ConfigMap(map) => {
                [sizes(&map.data, text), sizes(&map.binary_data, bytes)].concat()
            }
            LocalObject::Secret(secret) => {
                [sizes(&secret.data, bytes), sizes(&secret.string_data, text)].concat()
            }
        }
    }
}

impl Serialize for LocalObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LocalObject::ConfigMap(object) => object.serialize(serializer),
            LocalObject::Secret(object) => object.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for LocalObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(deserializer)?;
        let kind = value.get("kind").and_then(Value::as_str).map(str::to_string);
        let object = match kind.as_deref() {
            Some("ConfigMap") => serde_yaml::from_value(value).map(LocalObject::ConfigMap),
            Some("Secret") => serde_yaml::from_value(value).map(LocalObject::Secret),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "kind {other:?} is not one a node keeps ({KINDS}; pods go in machine.pods)"
                )))
            }
            None => return Err(D::Error::custom(format!("kind is required ({KINDS})"))),
        };
        object.map_err(D::Error::custom)
    }
}

/// Object metadata, as kept (in [`CONFIG_MAP`] and [`SECRET`]).
const METADATA: Supported = Supported::Fields(
    &[
        ("name", Supported::Whole),
        ("namespace", Supported::Whole),
        ("labels", Supported::Whole),
        ("annotations", Supported::Whole),
    ],
    "",
);

/// The fields of a ConfigMap Cairn keeps.
static CONFIG_MAP: Supported = Supported::Fields(
    &[
        ("apiVersion", Supported::Whole),
        ("kind", Supported::Whole),
        ("metadata", METADATA),
        ("data", Supported::Whole),
        ("binaryData", Supported::Whole),
        ("immutable", Supported::Whole),
    ],
    "",
);

/// The fields of a Secret Cairn keeps.
static SECRET: Supported = Supported::Fields(
    &[
        ("apiVersion", Supported::Whole),
        ("kind", Supported::Whole),
        ("metadata", METADATA),
        ("type", Supported::Whole),
        ("data", Supported::Whole),
        ("stringData", Supported::Whole),
        ("immutable", Supported::Whole),
    ],
    "",
);

/// Why `key` cannot be a key of a ConfigMap or a Secret (a file name in their volumes), as the
/// API server checks it; None when it can.
pub fn key_problem(key: &str) -> Option<String> {
    let allowed = |ch: char| ch.is_ascii_alphanumeric() || "-._".contains(ch);
    if key.is_empty() || key.len() > 253 || !key.chars().all(allowed) {
        Some(format!("{key:?} is not a key (1-253 letters, digits, '-', '_' and '.')"))
    } else if key == "." || key.starts_with("..") {
        Some(format!("{key:?} is not a key (it may not be '.' or start with '..')"))
    } else {
        None
    }
}

/// Whether `name` is a DNS subdomain in lower case, as ConfigMaps and Secrets are named.
pub fn is_subdomain_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_object_name)
}

/// Checks `machine.objects` (at `path`); `written` holds them as written, by index, to find
/// fields Kubernetes does not know.
pub(super) fn check_objects(
    c: &mut Checker,
    objects: &[LocalObject],
    written: &[Value],
    path: &str,
) {
    let mut seen = HashSet::new();
    for (i, object) in objects.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match serde_yaml::to_value(object) {
            Ok(read) => {
                check_fields(c, written.get(i).unwrap_or(&read), &read, object.supported(), &at)
            }
            Err(e) => c.fail(&at, format!("cannot be checked: {e}")),
        }
        let meta = object.metadata();
        match &meta.name {
            Some(name) => c.check(is_subdomain_name(name), format!("{at}.metadata.name"), || {
                format!("{name:?} is not a DNS subdomain (lower-case letters, digits, '-', '.')")
            }),
            None => c.fail(format!("{at}.metadata.name"), "is required"),
        }
        if let Some(namespace) = &meta.namespace {
            c.check(is_object_name(namespace), format!("{at}.metadata.namespace"), || {
                format!("{namespace:?} is not a DNS label (1-63 lower-case letters, digits, '-')")
            });
        }
        let key = (object.kind(), object.namespace().to_string(), object.name().to_string());
        c.check(seen.insert(key), format!("{at}.metadata.name"), || {
            format!(
                "{} {}/{} is defined more than once",
                object.kind(),
                object.namespace(),
                object.name()
            )
        });
        let entries = object.entries();
        let mut keys = HashSet::new();
        for (key, _) in &entries {
            if let Some(problem) = key_problem(key) {
                c.fail(format!("{at}.data.{key:?}"), problem);
            }
            // A Secret's stringData overrides its data by design; a ConfigMap's two maps may
            // not share a key.
            if let LocalObject::ConfigMap(_) = object {
                c.check(keys.insert(*key), format!("{at}.binaryData.{key:?}"), || {
                    "is also a key of data".to_string()
                });
            }
        }
        let bytes: usize = entries.iter().map(|(key, size)| key.len() + size).sum();
        c.check(bytes <= MAX_OBJECT_BYTES, at, || {
            format!("holds {bytes} bytes, more than the {MAX_OBJECT_BYTES} an object may")
        });
    }
}

/// Replaces a Secret's values with `redacted`, keeping its keys (readers may know which keys
/// exist, as `kubectl describe secret` shows them).
pub(super) fn redact(object: &mut LocalObject, redacted: &str) {
    let LocalObject::Secret(secret) = object else { return };
    for value in secret.data.iter_mut().flat_map(|data| data.values_mut()) {
        *value = k8s_openapi::ByteString(redacted.as_bytes().to_vec());
    }
    for value in secret.string_data.iter_mut().flat_map(|data| data.values_mut()) {
        *value = redacted.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::Problem;

    fn problems(yaml: &str) -> Vec<String> {
        let written: Vec<Value> = serde_yaml::from_str(yaml).unwrap();
        let objects: Vec<LocalObject> = serde_yaml::from_str(yaml).unwrap();
        let mut c = Checker::default();
        check_objects(&mut c, &objects, &written, "machine.objects");
        c.problems.iter().map(Problem::to_string).collect()
    }

    #[test]
    fn config_maps_and_secrets_are_read_by_kind() {
        let objects: Vec<LocalObject> = serde_yaml::from_str(concat!(
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: site}, data: {index.html: hi}}\n",
            "- {apiVersion: v1, kind: Secret, metadata: {name: creds, namespace: apps},\n",
            "   data: {password: aHVudGVyMg==}, stringData: {user: admin}}\n",
        ))
        .unwrap();
        assert_eq!(objects[0].kind(), "ConfigMap");
        assert_eq!((objects[0].namespace(), objects[0].name()), ("default", "site"));
        let LocalObject::Secret(secret) = &objects[1] else { panic!("{objects:?}") };
        assert_eq!(secret.data.as_ref().unwrap()["password"].0, b"hunter2");
        assert_eq!(objects[1].namespace(), "apps");
        // Written back as they were read.
        let again: Vec<LocalObject> =
            serde_yaml::from_str(&serde_yaml::to_string(&objects).unwrap()).unwrap();
        assert_eq!(again, objects);
    }

    #[test]
    fn other_kinds_are_refused_by_name() {
        let read = serde_yaml::from_str::<Vec<LocalObject>>(
            "- {apiVersion: v1, kind: Service, metadata: {name: web}}\n",
        );
        let error = read.unwrap_err().to_string();
        assert!(error.contains("\"Service\" is not one a node keeps"), "{error}");
        let read = serde_yaml::from_str::<Vec<LocalObject>>("- {metadata: {name: web}}\n");
        assert!(read.unwrap_err().to_string().contains("kind is required"));
    }

    #[test]
    fn names_keys_fields_and_duplicates_are_checked() {
        assert_eq!(
            problems(concat!(
                "- {apiVersion: v1, kind: ConfigMap, metadata: {name: Site}, data: {../x: a}}\n",
                "- {apiVersion: v1, kind: ConfigMap, metadata: {name: ok}, data: {a: b},\n",
                "   binaryData: {a: Yg==}, dta: {}}\n",
                "- {apiVersion: v1, kind: ConfigMap, metadata: {name: ok, generateName: x}}\n",
                "- {apiVersion: v1, kind: Secret, metadata: {name: ok}, data: {.env: YQ==}}\n",
            )),
            [
                "machine.objects[0].metadata.name: \"Site\" is not a DNS subdomain (lower-case letters, digits, '-', '.')",
                "machine.objects[0].data.\"../x\": \"../x\" is not a key (1-253 letters, digits, '-', '_' and '.')",
                "machine.objects[1].dta: unknown field",
                "machine.objects[1].binaryData.\"a\": is also a key of data",
                "machine.objects[2].metadata.generateName: not supported by Cairn's kubelet",
                "machine.objects[2].metadata.name: ConfigMap default/ok is defined more than once",
            ]
        );
    }

    #[test]
    fn an_object_over_a_mebibyte_is_refused() {
        let big = "a".repeat(MAX_OBJECT_BYTES);
        let yaml = format!(
            "- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: big}}, data: {{k: {big}}}}}\n"
        );
        let found = problems(&yaml);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("more than the 1048576 an object may"), "{found:?}");
    }

    #[test]
    fn secrets_lose_their_values_and_keep_their_keys() {
        let mut objects: Vec<LocalObject> = serde_yaml::from_str(concat!(
            "- {apiVersion: v1, kind: Secret, metadata: {name: s}, data: {p: aHVudGVyMg==}, stringData: {u: admin}}\n",
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: c}, data: {k: v}}\n",
        ))
        .unwrap();
        let config_map = objects[1].clone();
        objects.iter_mut().for_each(|o| redact(o, "***"));
        let LocalObject::Secret(secret) = &objects[0] else { panic!() };
        assert_eq!(secret.data.as_ref().unwrap()["p"].0, b"***");
        assert_eq!(secret.string_data.as_ref().unwrap()["u"], "***");
        assert_eq!(objects[1], config_map);
    }
}
