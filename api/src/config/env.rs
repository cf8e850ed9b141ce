//! Environment variables of a container that come from the pod itself (`valueFrom.fieldRef`)
//! or from its resources (`valueFrom.resourceFieldRef`), and the files of downwardAPI volumes
//! that hold the same: the downward API. What they may name is decided here, once, for the
//! config's checks and for the kubelet that fills them in.

use k8s_openapi::api::core::v1::{Container, EnvVar};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::pod::{check_object_ref, cpu_millis, memory_bytes};
use super::validate::Checker;

/// A field of the pod an environment variable can hold, as `fieldRef.fieldPath` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodField {
    /// `metadata.name`.
    Name,
    /// `metadata.namespace`.
    Namespace,
    /// `metadata.uid`.
    Uid,
    /// `metadata.labels['KEY']`.
    Label(String),
    /// `metadata.annotations['KEY']`.
    Annotation(String),
    /// `metadata.labels`: every label, a `KEY="VALUE"` line each (files only).
    Labels,
    /// `metadata.annotations`, as the labels (files only).
    Annotations,
    /// `spec.nodeName`: the node's name.
    NodeName,
    /// `spec.serviceAccountName`.
    ServiceAccountName,
    /// `status.hostIP` (`status.hostIPs`: the same, one address).
    HostIp,
    /// `status.podIP` (`status.podIPs`: the same, one address).
    PodIp,
}

impl PodField {
    /// The field `path` names; why not, when it names none an environment variable can hold.
    pub fn parse(path: &str) -> Result<PodField, String> {
        let keyed = |prefix: &str| {
            path.strip_prefix(prefix)?
                .strip_suffix("']")
                .filter(|k| !k.is_empty())
                .map(String::from)
        };
        Ok(match path {
            "metadata.name" => PodField::Name,
            "metadata.namespace" => PodField::Namespace,
            "metadata.uid" => PodField::Uid,
            "spec.nodeName" => PodField::NodeName,
            "spec.serviceAccountName" => PodField::ServiceAccountName,
            "status.hostIP" | "status.hostIPs" => PodField::HostIp,
            "status.podIP" | "status.podIPs" => PodField::PodIp,
            _ => match (keyed("metadata.labels['"), keyed("metadata.annotations['")) {
                (Some(key), _) => PodField::Label(key),
                (_, Some(key)) => PodField::Annotation(key),
                _ => {
                    return Err(format!(
                        "{path:?} is not a field a variable can hold (metadata.name, namespace, \
                         uid, labels['KEY'], annotations['KEY'], spec.nodeName, \
                         serviceAccountName, status.hostIP(s), podIP(s))"
                    ))
                }
            },
        })
    }
}

impl PodField {
    /// The field `path` names that a downwardAPI volume's file may hold: the pod's metadata,
    /// as upstream (where the pod runs may change while the file stays).
    pub fn parse_for_file(path: &str) -> Result<PodField, String> {
        let field = match path {
            "metadata.labels" => Ok(PodField::Labels),
            "metadata.annotations" => Ok(PodField::Annotations),
            _ => PodField::parse(path),
        };
        match field {
            Ok(
                field @ (PodField::Name
                | PodField::Namespace
                | PodField::Uid
                | PodField::Label(_)
                | PodField::Annotation(_)
                | PodField::Labels
                | PodField::Annotations),
            ) => Ok(field),
            _ => Err(format!(
                "{path:?} is not a field a file can hold (metadata.name, namespace, uid, labels, \
                 annotations, labels['KEY'], annotations['KEY'])"
            )),
        }
    }
}

/// A resource of a container an environment variable can hold, as `resourceFieldRef.resource`
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceField {
    /// The limit (else the request).
    pub limit: bool,
    /// CPU (else memory).
    pub cpu: bool,
}

impl ResourceField {
    /// The resource `name` names; why not, when it names none Cairn's kubelet sets.
    pub fn parse(name: &str) -> Result<ResourceField, String> {
        let (limit, cpu) = match name {
            "limits.cpu" => (true, true),
            "limits.memory" => (true, false),
            "requests.cpu" => (false, true),
            "requests.memory" => (false, false),
            _ => {
                return Err(format!(
                    "{name:?} is not a resource Cairn's kubelet sets (limits.cpu, limits.memory, \
                     requests.cpu, requests.memory)"
                ))
            }
        };
        Ok(ResourceField { limit, cpu })
    }

    /// The unit a value is counted in: `divisor` (1 when absent), in millicores or bytes.
    pub fn unit(self, divisor: Option<&Quantity>) -> Result<u64, String> {
        let unit = match (divisor, self.cpu) {
            (None, true) => 1000,
            (None, false) => 1,
            (Some(divisor), true) => cpu_millis(divisor)?,
            (Some(divisor), false) => memory_bytes(divisor)?,
        };
        match unit {
            0 => Err("a divisor of 0 divides nothing".into()),
            unit => Ok(unit),
        }
    }
}

/// Checks a container's environment; `containers` are the pod's, which a `resourceFieldRef`
/// may name. Problem paths start with `path` (`...containers[0]`).
pub(super) fn check(c: &mut Checker, container: &Container, containers: &[Container], path: &str) {
    for (i, var) in container.env.iter().flatten().enumerate() {
        let at = format!("{path}.env[{i}]");
        let name = &var.name;
        c.check(
            !name.is_empty() && name.chars().all(|ch| ch.is_ascii_graphic() && ch != '='),
            format!("{at}.name"),
            || format!("{name:?} is not a variable name (printable characters but '=')"),
        );
        if let Some(from) = &var.value_from {
            check_source(c, var, from, containers, &at);
        }
    }
    check_env_from(c, container, path);
}

/// Checks a reference to a container's resource at `at`; `containers` are the pod's.
fn check_resource_ref(
    c: &mut Checker,
    resource: &k8s_openapi::api::core::v1::ResourceFieldSelector,
    containers: &[Container],
    at: &str,
) {
    match ResourceField::parse(&resource.resource) {
        Ok(field) => {
            if let Err(reason) = field.unit(resource.divisor.as_ref()) {
                c.fail(format!("{at}.divisor"), reason);
            }
        }
        Err(reason) => c.fail(format!("{at}.resource"), reason),
    }
    if let Some(name) = resource.container_name.as_deref().filter(|n| !n.is_empty()) {
        c.check(
            containers.iter().any(|other| other.name == name),
            format!("{at}.containerName"),
            || format!("{name:?} names no container of this pod"),
        );
    }
}

/// Checks the items of a downwardAPI volume at `at` (`...volumes[0].downwardAPI`): each holds
/// a field of the pod's metadata or a resource of a container it names, as upstream.
pub(super) fn check_volume(
    c: &mut Checker,
    volume: &k8s_openapi::api::core::v1::DownwardAPIVolumeSource,
    containers: &[Container],
    at: &str,
) {
    for (i, item) in volume.items.iter().flatten().enumerate() {
        let at = format!("{at}.items[{i}]");
        let given = [item.field_ref.is_some(), item.resource_field_ref.is_some()];
        c.check(given.iter().filter(|g| **g).count() == 1, &at, || {
            "needs exactly one of fieldRef and resourceFieldRef".into()
        });
        if let Some(field) = &item.field_ref {
            if let Err(reason) = PodField::parse_for_file(&field.field_path) {
                c.fail(format!("{at}.fieldRef.fieldPath"), reason);
            }
        }
        if let Some(resource) = &item.resource_field_ref {
            let at = format!("{at}.resourceFieldRef");
            let named = resource.container_name.as_deref().is_some_and(|n| !n.is_empty());
            c.check(named, format!("{at}.containerName"), || {
                "is required in a volume: which container's resource".into()
            });
            check_resource_ref(c, resource, containers, &at);
        }
    }
}

fn check_source(
    c: &mut Checker,
    var: &EnvVar,
    from: &k8s_openapi::api::core::v1::EnvVarSource,
    containers: &[Container],
    at: &str,
) {
    let at = format!("{at}.valueFrom");
    c.check(var.value.as_deref().unwrap_or_default().is_empty(), &at, || {
        "and a non-empty value together: a variable has one source".into()
    });
    let given = [
        from.field_ref.is_some(),
        from.resource_field_ref.is_some(),
        from.config_map_key_ref.is_some(),
        from.secret_key_ref.is_some(),
    ];
    match given.iter().filter(|given| **given).count() {
        0 => c.fail(&at, format!("needs one of {SOURCES}")),
        1 => {}
        _ => c.fail(&at, format!("needs exactly one of {SOURCES}")),
    }
    if let Some(field) = &from.field_ref {
        if let Err(reason) = PodField::parse(&field.field_path) {
            c.fail(format!("{at}.fieldRef.fieldPath"), reason);
        }
    }
    if let Some(resource) = &from.resource_field_ref {
        check_resource_ref(c, resource, containers, &format!("{at}.resourceFieldRef"));
    }
    let key_refs = [
        ("configMapKeyRef", from.config_map_key_ref.as_ref().map(|r| (&r.name, &r.key))),
        ("secretKeyRef", from.secret_key_ref.as_ref().map(|r| (&r.name, &r.key))),
    ];
    for (field, reference) in key_refs {
        let Some((name, key)) = reference else { continue };
        check_object_ref(c, name, format!("{at}.{field}.name"));
        if let Some(problem) = super::objects::key_problem(key) {
            c.fail(format!("{at}.{field}.key"), problem);
        }
    }
}

/// The sources of a variable, for messages.
const SOURCES: &str = "fieldRef, resourceFieldRef, configMapKeyRef and secretKeyRef";

/// Checks a container's `envFrom`: each names one ConfigMap or Secret.
fn check_env_from(c: &mut Checker, container: &Container, path: &str) {
    for (i, from) in container.env_from.iter().flatten().enumerate() {
        let at = format!("{path}.envFrom[{i}]");
        let names = [
            ("configMapRef", from.config_map_ref.as_ref().map(|r| &r.name)),
            ("secretRef", from.secret_ref.as_ref().map(|r| &r.name)),
        ];
        let given: Vec<_> = names.iter().filter_map(|(f, n)| Some((*f, (*n)?))).collect();
        match given.as_slice() {
            [(field, name)] => check_object_ref(c, name, format!("{at}.{field}.name")),
            [] => c.fail(&at, "needs one of configMapRef and secretRef"),
            _ => c.fail(&at, "needs exactly one of configMapRef and secretRef"),
        }
        if let Some(prefix) = &from.prefix {
            c.check(!prefix.contains('='), format!("{at}.prefix"), || {
                format!("{prefix:?} may not hold '='")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_are_those_of_the_downward_api() {
        assert_eq!(PodField::parse("metadata.name"), Ok(PodField::Name));
        assert_eq!(PodField::parse("status.podIPs"), Ok(PodField::PodIp));
        assert_eq!(
            PodField::parse("metadata.labels['app.kubernetes.io/name']"),
            Ok(PodField::Label("app.kubernetes.io/name".into()))
        );
        assert_eq!(
            PodField::parse("metadata.annotations['a']"),
            Ok(PodField::Annotation("a".into()))
        );
        for refused in ["metadata.labels", "metadata.labels['']", "spec.containers", "status.phase"]
        {
            assert!(PodField::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn resource_units_follow_the_divisor() {
        let cpu = ResourceField::parse("limits.cpu").unwrap();
        assert_eq!(cpu.unit(None), Ok(1000));
        assert_eq!(cpu.unit(Some(&Quantity("1m".into()))), Ok(1));
        let memory = ResourceField::parse("requests.memory").unwrap();
        assert_eq!(memory.unit(Some(&Quantity("1Mi".into()))), Ok(1 << 20));
        assert_eq!(
            memory.unit(Some(&Quantity("0".into()))),
            Err("a divisor of 0 divides nothing".into())
        );
        assert!(ResourceField::parse("limits.ephemeral-storage").is_err());
    }
}
