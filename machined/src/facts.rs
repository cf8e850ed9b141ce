//! Typed facts about the node, each on a watch channel: what services depend on and react
//! to, instead of reaching into a hub of the node's state or asking the kernel themselves.
//!
//! One writer publishes each fact ([`crate::node::config::Configuration`] the running
//! config, the `addresses` service the node's addresses, the boot its volumes and the
//! services' kernel modules, the `time` service the clock's state); any number of readers watch them. A service that needs a fact before it starts says so with
//! [`crate::service::Dependency::Fact`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn_api::config::MachineConfig;
use tokio::sync::watch;

/// The node's addresses and default route, as the kernel has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// Every address on every link, loopback included, sorted.
    pub addresses: Vec<IpAddr>,
    /// The gateways of the default routes (IPv4 and IPv6), sorted.
    pub default_gateways: Vec<IpAddr>,
    /// Whether the kernel has been asked yet (before that, the lists mean nothing).
    pub known: bool,
}

/// The data volumes machined has mounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Volumes {
    /// STATE (the config, the node's identity) is mounted and writable.
    pub state: bool,
    /// EPHEMERAL (`/var`: logs, containerd) is mounted and writable.
    pub ephemeral: bool,
}

/// Where the clock's time comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Clock {
    /// Not synchronised yet: the clock is the hardware clock's, or a floor's.
    Unsynchronised {
        /// The floor the clock was raised to at boot, when it was below it.
        raised_to_floor: Option<SystemTime>,
        /// Why the last sync failed, if one was tried.
        last_error: Option<String>,
    },
    /// Synchronised with a time server.
    Synchronised {
        /// The server, as `name (address)`.
        source: String,
        /// The offset found at the last sync, in seconds (positive: the clock was behind).
        offset_seconds: f64,
        /// When the last sync happened.
        at: SystemTime,
        /// What was done about the offset (`step +3600.000000s`, `slew -0.004512s`).
        correction: String,
        /// The floor the clock was raised to at boot, before it was synchronised.
        raised_to_floor: Option<SystemTime>,
        /// Why a sync since the last one above failed, or the step it refused (one server
        /// alone may not jump a synchronised clock).
        last_error: Option<String>,
    },
    /// Someone else keeps the time: the host, when machined is not PID 1.
    Host,
    /// The config turned synchronisation off (`machine.time.disabled`).
    Disabled,
}

impl Clock {
    /// Whether certificates can be issued and checked against the clock: it is
    /// synchronised, or nobody will synchronise it.
    pub fn is_trusted(&self) -> bool {
        !matches!(self, Clock::Unsynchronised { .. })
    }

    /// The floor the clock was raised to at this boot, if it was.
    pub fn raised_to_floor(&self) -> Option<SystemTime> {
        match self {
            Clock::Unsynchronised { raised_to_floor, .. }
            | Clock::Synchronised { raised_to_floor, .. } => *raised_to_floor,
            Clock::Host | Clock::Disabled => None,
        }
    }
}

/// A fact a service can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// The node has a config (configured mode).
    Configured,
    /// The node's addresses are known.
    Addresses,
    /// STATE is mounted.
    StateVolume,
    /// EPHEMERAL is mounted.
    EphemeralVolume,
    /// The kernel modules the services need with no device asking for them (overlay,
    /// bridge, netfilter) are loaded.
    ServiceModules,
}

impl Fact {
    /// The name shown in a service's waiting state.
    pub fn as_str(self) -> &'static str {
        match self {
            Fact::Configured => "a config",
            Fact::Addresses => "addresses",
            Fact::StateVolume => "STATE",
            Fact::EphemeralVolume => "EPHEMERAL",
            Fact::ServiceModules => "kernel modules",
        }
    }
}

/// The node's facts.
pub struct Facts {
    /// The running config (none: maintenance mode).
    pub config: watch::Sender<Option<Arc<MachineConfig>>>,
    /// The node's addresses.
    pub addresses: watch::Sender<Addresses>,
    /// The mounted volumes.
    pub volumes: watch::Sender<Volumes>,
    /// The clock.
    pub clock: watch::Sender<Clock>,
    /// Whether the modules the services need are loaded ([`Fact::ServiceModules`]).
    pub service_modules: watch::Sender<bool>,
}

impl Facts {
    /// Facts for a node running `config`, nothing else known yet.
    pub fn new(config: Option<Arc<MachineConfig>>) -> Arc<Facts> {
        Arc::new(Facts {
            config: watch::channel(config).0,
            addresses: watch::channel(Addresses::default()).0,
            volumes: watch::channel(Volumes::default()).0,
            clock: watch::channel(Clock::Unsynchronised {
                raised_to_floor: None,
                last_error: None,
            })
            .0,
            service_modules: watch::channel(false).0,
        })
    }

    /// Whether `fact` holds now.
    pub fn holds(&self, fact: Fact) -> bool {
        match fact {
            Fact::Configured => self.config.borrow().is_some(),
            Fact::Addresses => self.addresses.borrow().known,
            Fact::StateVolume => self.volumes.borrow().state,
            Fact::EphemeralVolume => self.volumes.borrow().ephemeral,
            Fact::ServiceModules => *self.service_modules.borrow(),
        }
    }

    /// Waits until `fact` holds, or `limit` has passed; returns whether it holds.
    pub async fn wait(&self, fact: Fact, limit: Option<Duration>) -> bool {
        let wait = async {
            // `wait_for` returns at once when the value already fits; an error means the
            // sender is gone, which the owner of these facts never lets happen.
            match fact {
                Fact::Configured => drop(self.config.subscribe().wait_for(|c| c.is_some()).await),
                Fact::Addresses => drop(self.addresses.subscribe().wait_for(|a| a.known).await),
                Fact::StateVolume => drop(self.volumes.subscribe().wait_for(|v| v.state).await),
                Fact::EphemeralVolume => {
                    drop(self.volumes.subscribe().wait_for(|v| v.ephemeral).await)
                }
                Fact::ServiceModules => {
                    drop(self.service_modules.subscribe().wait_for(|loaded| *loaded).await)
                }
            }
        };
        match limit {
            None => wait.await,
            Some(limit) => drop(tokio::time::timeout(limit, wait).await),
        }
        self.holds(fact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_until_a_fact_holds_or_the_limit() {
        let facts = Facts::new(None);
        assert!(!facts.wait(Fact::EphemeralVolume, Some(Duration::from_secs(5))).await);
        let waiting = {
            let facts = facts.clone();
            tokio::spawn(async move { facts.wait(Fact::Addresses, None).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        facts.addresses.send_modify(|a| a.known = true);
        assert!(waiting.await.unwrap());
        facts.volumes.send_modify(|v| v.ephemeral = true);
        assert!(facts.wait(Fact::EphemeralVolume, None).await);
        assert!(!facts.holds(Fact::StateVolume));
    }
}
