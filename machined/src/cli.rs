//! Command-line options.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// machined: the Cairn node daemon (PID 1 on a node; an ordinary process for development).
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Options {
    /// The node's root directory: machine state lives under DIR/system/state, logs under
    /// DIR/var/log. `/` on a node.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Where the gRPC API listens.
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], cairn_api::API_PORT)))]
    pub listen: SocketAddr,
    /// How often in-memory logs are appended to DIR/var/log (they also are at reboot and
    /// shutdown). Kept rare (SD cards wear): the window in which a node writes back the data
    /// nobody syncs.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub log_flush_interval: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_flushed_once_per_write_back_window() {
        let options = Options::parse_from(["machined"]);
        assert_eq!(options.log_flush_interval, crate::boot::flash_wear::WRITE_BACK_WINDOW);
    }
}
