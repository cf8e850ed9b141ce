//! A container's `securityContext`, checked as the API server and the runtime would have it:
//! user and group IDs in range, capability names the kernel knows (written as Kubernetes
//! writes them, without `CAP_`, since containerd adds the prefix), and no request for
//! `allowPrivilegeEscalation: false` that privileges would contradict.

use k8s_openapi::api::core::v1::SecurityContext;

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

/// Checks a container's security context; problem paths start with `path`
/// (`...containers[0].securityContext`).
pub(super) fn check(c: &mut Checker, context: &SecurityContext, path: &str) {
    let ids = [("runAsUser", context.run_as_user), ("runAsGroup", context.run_as_group)];
    for (field, id) in ids {
        if let Some(id) = id {
            c.check((0..=i64::from(i32::MAX)).contains(&id), format!("{path}.{field}"), || {
                format!("{id} is outside 0..2147483647")
            });
        }
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
    if context.allow_privilege_escalation == Some(false) {
        let field = format!("{path}.allowPrivilegeEscalation");
        c.check(context.privileged != Some(true), &field, || {
            "false contradicts privileged: true".to_string()
        });
        let adds_sys_admin = lists[0].1.into_iter().flatten().any(|name| {
            let name = name.to_ascii_uppercase();
            name.strip_prefix("CAP_").unwrap_or(&name) == "SYS_ADMIN"
        });
        c.check(!adds_sys_admin, field, || {
            "false contradicts capabilities.add: SYS_ADMIN".to_string()
        });
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
