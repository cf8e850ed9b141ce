//! Roles: what a client may do, carried as the Organization of its certificate.

use std::fmt;
use std::str::FromStr;

/// A client's role, ordered from least to most powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads state; never sees secrets.
    Reader,
    /// Reads, and also reboots, shuts down and restarts services.
    Operator,
    /// Does everything, including applying configuration.
    Admin,
}

impl Role {
    /// Every role, least powerful first.
    pub const ALL: [Role; 3] = [Role::Reader, Role::Operator, Role::Admin];

    /// The certificate Organization that grants this role.
    pub fn organization(self) -> &'static str {
        match self {
            Role::Reader => "os:reader",
            Role::Operator => "os:operator",
            Role::Admin => "os:admin",
        }
    }

    /// Whether this role may do what `required` may.
    pub fn grants(self, required: Role) -> bool {
        self >= required
    }

    /// The most powerful role among certificate Organizations; unknown ones grant nothing.
    pub fn strongest<'a>(organizations: impl IntoIterator<Item = &'a str>) -> Option<Role> {
        organizations.into_iter().filter_map(|o| o.parse().ok()).max()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.organization())
    }
}

/// A string that names no role.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}: expected one of os:admin, os:operator, os:reader")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.organization() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_order() {
        assert_eq!("os:reader".parse::<Role>().unwrap(), Role::Reader);
        assert!("os:root".parse::<Role>().is_err());
        assert!(Role::Admin.grants(Role::Operator));
        assert!(!Role::Reader.grants(Role::Operator));
        assert_eq!(Role::strongest(["acme", "os:reader", "os:operator"]), Some(Role::Operator));
        assert_eq!(Role::strongest(["acme"]), None);
    }
}
