//! Kubernetes labels, as the API server checks them: a key is a name of at most 63
//! characters, optionally after a DNS prefix and `/`; a value is such a name or empty.

use super::validate::is_dns_name;

/// Why `key` is no label key; `None` when it is one.
pub(super) fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| !p.is_empty() && is_dns_name(&p.to_ascii_lowercase()));
    (!prefix_ok || name.is_empty() || !is_name(name)).then(|| {
        format!(
            "{key:?} is no label key (a name of 1-63 letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit, optionally after a DNS prefix and '/')"
        )
    })
}

/// Why `value` is no label value; `None` when it is one.
pub(super) fn value_problem(value: &str) -> Option<String> {
    (!value.is_empty() && !is_name(value)).then(|| {
        format!(
            "{value:?} is no label value (empty, or 1-63 letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit)"
        )
    })
}

fn is_name(name: &str) -> bool {
    let ends_ok = |ch: Option<char>| ch.is_some_and(|ch| ch.is_ascii_alphanumeric());
    name.len() <= 63
        && ends_ok(name.chars().next())
        && ends_ok(name.chars().last())
        && name.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_follow_kubernetes() {
        for key in ["zone", "topology.kubernetes.io/zone", "example.com/gpu_model", "a.b-c"] {
            assert_eq!(key_problem(key), None, "{key}");
        }
        for key in
            ["", "/zone", "example.com/", "-zone", "bad prefix/zone", "a/b/c", &"x".repeat(64)]
        {
            assert!(key_problem(key).is_some(), "{key}");
        }
        for value in ["", "shed-3", "v1.2_3"] {
            assert_eq!(value_problem(value), None, "{value}");
        }
        assert_eq!(
            value_problem("no spaces").unwrap(),
            "\"no spaces\" is no label value (empty, or 1-63 letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit)"
        );
    }
}
