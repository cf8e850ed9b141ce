//! Who the node is and whom it trusts: its certificates, the API's TLS settings, and whom a
//! node in maintenance mode takes its first config from.

pub mod bootstrap_trust;
pub mod pki;
pub mod tls;
