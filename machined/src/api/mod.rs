//! The gRPC edge: the TLS listener, who may call what, and the handlers that turn requests
//! into calls on [`crate::machine::Machine`].

pub mod admission;
pub mod auth;
pub mod budget;
pub mod connection;
pub mod handlers;
pub mod handshakes;
pub mod kernel_log;
pub mod places;
pub mod server;
pub mod upgrade;
