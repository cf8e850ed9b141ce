//! The services machined runs itself (the API server is [`crate::api::server::Apid`]).

pub mod addresses;
pub mod config_url;
pub mod containerd;
pub mod logflush;
pub mod network;
pub mod power_button;
pub mod serving_cert;
pub mod settings;
pub mod time;
