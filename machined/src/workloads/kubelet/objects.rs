//! The objects pods read (the config's `machine.objects` and those applied), looked up by
//! namespace and name: the files of a configMap or secret volume, the values of `envFrom` and
//! of `env[].valueFrom.configMapKeyRef`/`secretKeyRef`, and which PersistentVolumeClaims exist.
//! Missing objects and keys are errors of the container that needs them (it waits, and says
//! why), unless the reference is `optional`, as in the upstream kubelet.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, EnvVar, KeyToPath, Volume};

use cairn_api::config::objects::LocalObject;
use cairn_api::config::MachineConfig;

/// The default mode of a volume's files, as upstream (0644).
pub const DEFAULT_MODE: u32 = 0o644;

/// One object's data: its keys and their bytes.
type Data = BTreeMap<String, Vec<u8>>;

/// The objects of one config, by (namespace, name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalObjects {
    config_maps: BTreeMap<(String, String), Data>,
    secrets: BTreeMap<(String, String), Data>,
    /// PersistentVolumeClaims: those applied, and those of StatefulSets' claim templates.
    claims: BTreeSet<(String, String)>,
}

/// A file of a configMap or secret volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedFile {
    /// Its path in the volume (relative, checked on apply).
    pub path: String,
    /// Its content.
    pub data: Vec<u8>,
    /// Its mode.
    pub mode: u32,
}

/// The kind of object a reference names.
#[derive(Debug, Clone, Copy)]
enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    /// As upstream names it in messages.
    fn word(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }
}

impl LocalObjects {
    /// The objects of `config` (none without one) and those `applied`; the config's win a
    /// name both use.
    pub fn of(config: Option<&MachineConfig>, applied: &[LocalObject]) -> LocalObjects {
        let configured = config.map_or(&[][..], |c| c.machine.objects.as_slice());
        LocalObjects::new(applied.iter().chain(configured))
    }

    /// An index of `list`, a later object replacing an earlier one of the same name.
    pub(super) fn new<'a>(list: impl IntoIterator<Item = &'a LocalObject>) -> LocalObjects {
        let mut objects = LocalObjects::default();
        for object in list {
            let key = (object.namespace().to_string(), object.name().to_string());
            match object {
                LocalObject::ConfigMap(map) => {
                    let text =
                        map.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into()));
                    let binary =
                        map.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone()));
                    objects.config_maps.insert(key, text.chain(binary).collect());
                }
                LocalObject::Secret(secret) => {
                    // stringData is written over data, as the API server merges them.
                    let data = secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone()));
                    let text = secret
                        .string_data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.clone().into()));
                    objects.secrets.insert(key, data.chain(text).collect());
                }
                LocalObject::PersistentVolumeClaim(_) => {
                    objects.claims.insert(key);
                }
                LocalObject::StatefulSet(_) => {
                    for claim in object.implied_claims() {
                        objects.claims.insert((key.0.clone(), claim));
                    }
                }
                // Pods read the others; these are read by nobody.
                _ => {}
            }
        }
        objects
    }

    /// Whether claim `name` exists in `namespace`.
    pub fn has_claim(&self, namespace: &str, name: &str) -> bool {
        self.claims.contains(&(namespace.to_string(), name.to_string()))
    }

    /// The data of Secret `name` in `namespace`.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Data> {
        self.data(Kind::Secret, namespace, name)
    }

    fn data(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Data> {
        let key = (namespace.to_string(), name.to_string());
        match kind {
            Kind::ConfigMap => self.config_maps.get(&key),
            Kind::Secret => self.secrets.get(&key),
        }
    }

    /// The files of `volume` of a pod in `namespace`: None when it is neither a configMap nor
    /// a secret volume; an error naming the object or key that is missing.
    pub fn volume_files(
        &self,
        namespace: &str,
        volume: &Volume,
    ) -> Option<Result<Vec<ProjectedFile>, String>> {
        let (kind, name, items, default_mode, optional) = match (&volume.config_map, &volume.secret)
        {
            (Some(map), _) => {
                (Kind::ConfigMap, map.name.as_str(), &map.items, map.default_mode, map.optional)
            }
            (None, Some(secret)) => (
                Kind::Secret,
                secret.secret_name.as_deref().unwrap_or_default(),
                &secret.items,
                secret.default_mode,
                secret.optional,
            ),
            (None, None) => return None,
        };
        let optional = optional.unwrap_or(false);
        let default_mode = default_mode.map_or(DEFAULT_MODE, |mode| mode as u32);
        let Some(data) = self.data(kind, namespace, name) else {
            return Some(match optional {
                true => Ok(Vec::new()),
                false => Err(format!("{} {name:?} not found", kind.word())),
            });
        };
        let file = |path: &str, data: &[u8], mode: Option<i32>| ProjectedFile {
            path: path.to_string(),
            data: data.to_vec(),
            mode: mode.map_or(default_mode, |mode| mode as u32),
        };
        let Some(items) = items else {
            return Some(Ok(data.iter().map(|(key, value)| file(key, value, None)).collect()));
        };
        let mut files = Vec::new();
        for KeyToPath { key, path, mode } in items {
            match data.get(key) {
                Some(value) => files.push(file(path, value, *mode)),
                None if optional => {}
                None => {
                    return Some(Err(format!(
                        "{} {name:?} has no key {key:?} (volume {:?})",
                        kind.word(),
                        volume.name
                    )))
                }
            }
        }
        Some(Ok(files))
    }

    /// The value of `var` when it names a key of a ConfigMap or Secret: None for other
    /// variables; Ok(None) for an optional reference to what does not exist (the variable
    /// is then not set, as upstream).
    pub fn env_value(
        &self,
        namespace: &str,
        var: &EnvVar,
    ) -> Option<Result<Option<String>, String>> {
        let from = var.value_from.as_ref()?;
        let (kind, name, key, optional) = match (&from.config_map_key_ref, &from.secret_key_ref) {
            (Some(r), _) => (Kind::ConfigMap, &r.name, &r.key, r.optional),
            (None, Some(r)) => (Kind::Secret, &r.name, &r.key, r.optional),
            (None, None) => return None,
        };
        let value = self.data(kind, namespace, name).map(|data| data.get(key.as_str()));
        Some(match (value, optional.unwrap_or(false)) {
            (Some(Some(bytes)), _) => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
            (_, true) => Ok(None),
            (None, false) => Err(format!("env {}: {} {name:?} not found", var.name, kind.word())),
            (Some(None), false) => {
                Err(format!("env {}: {} {name:?} has no key {key:?}", var.name, kind.word()))
            }
        })
    }

    /// The variables of `container`'s `envFrom`, in order (a later source wins a name both
    /// set), each key with the source's prefix.
    pub fn env_from(
        &self,
        namespace: &str,
        container: &Container,
    ) -> Result<Vec<(String, String)>, String> {
        let mut vars: Vec<(String, String)> = Vec::new();
        for from in container.env_from.iter().flatten() {
            let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
                (Some(r), _) => (Kind::ConfigMap, &r.name, r.optional),
                (None, Some(r)) => (Kind::Secret, &r.name, r.optional),
                (None, None) => continue,
            };
            let Some(data) = self.data(kind, namespace, name) else {
                match optional.unwrap_or(false) {
                    true => continue,
                    false => return Err(format!("envFrom: {} {name:?} not found", kind.word())),
                }
            };
            let prefix = from.prefix.as_deref().unwrap_or_default();
            for (key, value) in data {
                let name = format!("{prefix}{key}");
                let value = String::from_utf8_lossy(value).into_owned();
                match vars.iter_mut().find(|(n, _)| *n == name) {
                    Some(var) => var.1 = value,
                    None => vars.push((name, value)),
                }
            }
        }
        Ok(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects() -> LocalObjects {
        let list: Vec<LocalObject> = serde_yaml::from_str(concat!(
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: site}, data: {index.html: hi, mode: fast},\n",
            "   binaryData: {logo.png: AAE=}}\n",
            "- {apiVersion: v1, kind: Secret, metadata: {name: creds, namespace: apps},\n",
            "   data: {user: cm9vdA==, pass: eA==}, stringData: {pass: hunter2}}\n",
        ))
        .unwrap();
        LocalObjects::new(&list)
    }

    fn volume(yaml: &str) -> Volume {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_volume_holds_every_key_or_the_items_it_names() {
        let objects = objects();
        let all = objects.volume_files("default", &volume("{name: v, configMap: {name: site}}"));
        let all = all.unwrap().unwrap();
        let listed: Vec<(&str, &[u8], u32)> =
            all.iter().map(|f| (f.path.as_str(), f.data.as_slice(), f.mode)).collect();
        assert_eq!(
            listed,
            [
                ("index.html", &b"hi"[..], 0o644),
                ("logo.png", &[0, 1][..], 0o644),
                ("mode", &b"fast"[..], 0o644)
            ]
        );
        let items = volume(concat!(
            "{name: v, secret: {secretName: creds, defaultMode: 256,\n",
            " items: [{key: pass, path: db/password}, {key: user, path: user, mode: 292}]}}",
        ));
        let files = objects.volume_files("apps", &items).unwrap().unwrap();
        assert_eq!(
            files[0],
            ProjectedFile { path: "db/password".into(), data: b"hunter2".to_vec(), mode: 0o400 }
        );
        assert_eq!((files[1].path.as_str(), files[1].mode), ("user", 0o444));
        // Other volumes are not projected.
        assert!(objects.volume_files("default", &volume("{name: v, emptyDir: {}}")).is_none());
    }

    #[test]
    fn missing_objects_and_keys_wait_unless_optional() {
        let objects = objects();
        let missing =
            objects.volume_files("default", &volume("{name: v, secret: {secretName: creds}}"));
        assert_eq!(missing, Some(Err("secret \"creds\" not found".into())));
        let optional = volume("{name: v, configMap: {name: other, optional: true}}");
        assert_eq!(objects.volume_files("default", &optional), Some(Ok(Vec::new())));
        let no_key = volume("{name: v, configMap: {name: site, items: [{key: nope, path: n}]}}");
        assert_eq!(
            objects.volume_files("default", &no_key),
            Some(Err("configmap \"site\" has no key \"nope\" (volume \"v\")".into()))
        );
    }

    #[test]
    fn variables_come_from_keys_and_from_whole_objects() {
        let objects = objects();
        let var = |yaml: &str| serde_yaml::from_str::<EnvVar>(yaml).unwrap();
        let mode = var("{name: MODE, valueFrom: {configMapKeyRef: {name: site, key: mode}}}");
        assert_eq!(objects.env_value("default", &mode), Some(Ok(Some("fast".into()))));
        let absent = var("{name: P, valueFrom: {secretKeyRef: {name: creds, key: pass}}}");
        assert_eq!(
            objects.env_value("default", &absent),
            Some(Err("env P: secret \"creds\" not found".into()))
        );
        assert_eq!(objects.env_value("apps", &absent), Some(Ok(Some("hunter2".into()))));
        let optional =
            var("{name: P, valueFrom: {secretKeyRef: {name: creds, key: nope, optional: true}}}");
        assert_eq!(objects.env_value("apps", &optional), Some(Ok(None)));
        assert!(objects.env_value("apps", &var("{name: A, value: b}")).is_none());

        let container: Container = serde_yaml::from_str(concat!(
            "{name: c, envFrom: [{secretRef: {name: creds}, prefix: DB_},\n",
            " {configMapRef: {name: gone, optional: true}}, {secretRef: {name: creds}, prefix: DB_}]}",
        ))
        .unwrap();
        let vars = objects.env_from("apps", &container).unwrap();
        assert_eq!(vars, [("DB_pass".into(), "hunter2".into()), ("DB_user".into(), "root".into())]);
        let needed: Container =
            serde_yaml::from_str("{name: c, envFrom: [{configMapRef: {name: gone}}]}").unwrap();
        assert_eq!(
            objects.env_from("apps", &needed),
            Err("envFrom: configmap \"gone\" not found".to_string())
        );
    }
}
