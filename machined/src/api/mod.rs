//! The gRPC edge: the TLS listener, who may call what, and the handlers that turn requests
//! into calls on the node's use-cases ([`crate::node::Node`]).

pub mod admission;
pub mod auth;
pub mod budget;
pub mod connection;
pub mod handlers;
pub mod handshakes;
pub mod places;
pub mod server;
pub mod status;
pub mod upgrade;
