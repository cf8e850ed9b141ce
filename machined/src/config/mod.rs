//! The machine config on the node: kept on STATE, compared with the running one, and put into
//! effect on the host (name, sysctls, files).

pub mod apply;
pub mod from_url;
pub mod host_settings;
pub mod store;
