//! A pod's and its containers' `securityContext`, checked as the API server and the runtime
//! would have them: user and group IDs in range, capability names the kernel knows (written
//! as Kubernetes writes them, without `CAP_`, since containerd adds the prefix), no request for
//! `allowPrivilegeEscalation: false` beside `privileged`, seccomp profiles the
//! node can load, sysctls a pod's namespaces hold, and no `runAsNonRoot` beside user 0.

use k8s_openapi::api::core::v1::{PodSecurityContext, SeccompProfile, SecurityContext};

use super::validate::Checker;

/// Linux's capabilities (6.12), as Kubernetes names them: without `CAP_`.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Where a `Localhost` seccomp profile is read from, as the kubelet's `--seccomp-profile-root`
/// (`machine.files` can put profiles there).
pub const SECCOMP_PROFILE_ROOT: &str = "/var/lib/kubelet/seccomp";

/// The sysctls a pod's own namespaces hold (Kubernetes' namespaced sysctls): the network's,
/// and IPC's.
const NAMESPACED_SYSCTLS: [&str; 5] =
    ["net.", "kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue."];

/// Checks a pod's security context; `host_network` when it shares the node's network.
/// Problem paths start with `path` (`...spec.securityContext`).
pub(super) fn check_pod(
    c: &mut Checker,
    context: &PodSecurityContext,
    host_network: bool,
    path: &str,
) {
    check_ids(c, &[("runAsUser", context.run_as_user), ("runAsGroup", context.run_as_group)], path);
    check_ids(c, &[("fsGroup", context.fs_group)], path);
    for (i, group) in context.supplemental_groups.iter().flatten().enumerate() {
        check_ids(c, &[(&format!("supplementalGroups[{i}]"), Some(*group))], path);
    }
    if let Some(profile) = &context.seccomp_profile {
        check_seccomp(c, profile, &format!("{path}.seccompProfile"));
    }
    for (i, sysctl) in context.sysctls.iter().flatten().enumerate() {
        let (name, at) = (&sysctl.name, format!("{path}.sysctls[{i}].name"));
        let namespaced = NAMESPACED_SYSCTLS.iter().any(|prefix| name.starts_with(prefix))
            && name.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-/".contains(ch));
        c.check(namespaced, &at, || {
            format!(
                "{name:?} is no sysctl of the pod's own namespaces (net.*, kernel.shm*, \
                 kernel.msg*, kernel.sem, fs.mqueue.*): set the node's in machine.sysctls"
            )
        });
        c.check(!(host_network && name.starts_with("net.")), at, || {
            format!("{name:?}: the pod shares the node's network; set it in machine.sysctls")
        });
    }
}

/// Checks the user a container runs as: `runAsNonRoot` (the container's, else the pod's)
/// beside user 0. With no user given, the image's is checked when the container starts.
pub(super) fn check_user(
    c: &mut Checker,
    pod: Option<&PodSecurityContext>,
    container: Option<&SecurityContext>,
    path: &str,
) {
    let non_root =
        container.and_then(|s| s.run_as_non_root).or(pod.and_then(|s| s.run_as_non_root));
    let user = container.and_then(|s| s.run_as_user).or(pod.and_then(|s| s.run_as_user));
    c.check(
        !(non_root == Some(true) && user == Some(0)),
        format!("{path}.securityContext"),
        || "runAsNonRoot contradicts runAsUser: 0 (of the container, or its pod)".to_string(),
    );
}

fn check_ids(c: &mut Checker, ids: &[(&str, Option<i64>)], path: &str) {
    for (field, id) in ids {
        if let Some(id) = id {
            c.check((0..=i64::from(i32::MAX)).contains(id), format!("{path}.{field}"), || {
                format!("{id} is outside 0..2147483647")
            });
        }
    }
}

fn check_seccomp(c: &mut Checker, profile: &SeccompProfile, path: &str) {
    let kind = profile.type_.as_str();
    let localhost = profile.localhost_profile.as_deref();
    match kind {
        "RuntimeDefault" | "Unconfined" => {
            c.check(localhost.is_none(), format!("{path}.localhostProfile"), || {
                format!("is only for type Localhost, not {kind}")
            });
        }
        "Localhost" => {
            let relative = localhost.is_some_and(|p| {
                !p.is_empty() && !p.starts_with('/') && !p.split('/').any(|part| part == "..")
            });
            c.check(relative, format!("{path}.localhostProfile"), || {
                format!(
                    "needs a path relative to {SECCOMP_PROFILE_ROOT}, without '..', with type Localhost"
                )
            });
        }
        _ => c.fail(
            format!("{path}.type"),
            format!("{kind:?} is not one of RuntimeDefault, Unconfined, Localhost"),
        ),
    }
}

/// Checks a container's security context; problem paths start with `path`
/// (`...containers[0].securityContext`).
pub(super) fn check(c: &mut Checker, context: &SecurityContext, path: &str) {
    check_ids(c, &[("runAsUser", context.run_as_user), ("runAsGroup", context.run_as_group)], path);
    if let Some(profile) = &context.seccomp_profile {
        check_seccomp(c, profile, &format!("{path}.seccompProfile"));
    }
    let capabilities = context.capabilities.as_ref();
    let lists = [
        ("add", capabilities.and_then(|caps| caps.add.as_ref())),
        ("drop", capabilities.and_then(|caps| caps.drop.as_ref())),
    ];
    for (list, names) in lists {
        for (i, name) in names.into_iter().flatten().enumerate() {
            if let Some(reason) = capability_problem(name) {
                c.fail(format!("{path}.capabilities.{list}[{i}]"), reason);
            }
        }
    }
    // As the API server: no_new_privs cannot hold for a process that has every privilege.
    // (Its check of CAP_SYS_ADMIN among the added capabilities matches only that spelling,
    // which is refused above; SYS_ADMIN with no_new_privs runs, as MetalLB's speaker has it.)
    if context.allow_privilege_escalation == Some(false) {
        c.check(
            context.privileged != Some(true),
            format!("{path}.allowPrivilegeEscalation"),
            || "false contradicts privileged: true".to_string(),
        );
    }
}

/// Why `name` is no capability containerd can grant or drop; `None` when it is one.
fn capability_problem(name: &str) -> Option<String> {
    // containerd upper-cases the names and adds `CAP_`; `ALL` stands for every capability.
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" || CAPABILITIES.contains(&upper.as_str()) {
        return None;
    }
    Some(match upper.strip_prefix("CAP_") {
        Some(bare) if CAPABILITIES.contains(&bare) => {
            format!("{name:?}: write it without CAP_ ({bare}), as Kubernetes does")
        }
        _ => format!("{name:?} is no Linux capability (like NET_ADMIN, or ALL)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_are_those_kubernetes_writes() {
        for name in ["NET_ADMIN", "net_bind_service", "ALL", "all", "CHECKPOINT_RESTORE"] {
            assert_eq!(capability_problem(name), None, "{name}");
        }
        assert_eq!(
            capability_problem("CAP_NET_ADMIN").unwrap(),
            "\"CAP_NET_ADMIN\": write it without CAP_ (NET_ADMIN), as Kubernetes does"
        );
        assert_eq!(
            capability_problem("NET_SUPERPOWER").unwrap(),
            "\"NET_SUPERPOWER\" is no Linux capability (like NET_ADMIN, or ALL)"
        );
    }
}
