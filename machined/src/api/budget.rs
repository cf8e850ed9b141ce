//! A budget of bytes held for requests at once, in all and per client network: what bounds
//! the memory request bodies take, whoever sends them and however slowly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::api::places::network_of;

/// Bytes that requests may hold at once.
#[derive(Clone)]
pub struct ByteBudget {
    state: Arc<Mutex<Held>>,
    total_max: usize,
    per_network_max: usize,
}

#[derive(Default)]
struct Held {
    total: usize,
    per_network: HashMap<IpAddr, usize>,
}

/// Bytes taken from a [`ByteBudget`]; given back when dropped.
pub struct Reservation {
    bytes: usize,
    network: IpAddr,
    state: Arc<Mutex<Held>>,
}

/// Why a reservation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BudgetExceeded {
    /// The client's network holds its share.
    #[error("requests from this network hold {held} bytes already (at most {max} at once)")]
    Network {
        /// Bytes the network holds.
        held: usize,
        /// Its share.
        max: usize,
    },
    /// Everyone together holds the budget.
    #[error("the node holds {held} bytes of requests already (at most {max} at once)")]
    Total {
        /// Bytes held.
        held: usize,
        /// The budget.
        max: usize,
    },
}

impl ByteBudget {
    /// `total_max` bytes, at most `per_network_max` of them for one network.
    pub fn new(total_max: usize, per_network_max: usize) -> Self {
        ByteBudget { state: Arc::default(), total_max, per_network_max }
    }

    /// Takes `bytes` for a request from `address`, or says why it cannot.
    pub fn reserve(&self, address: IpAddr, bytes: usize) -> Result<Reservation, BudgetExceeded> {
        let network = network_of(address);
        let mut held = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let by_network = held.per_network.get(&network).copied().unwrap_or(0);
        if by_network + bytes > self.per_network_max {
            return Err(BudgetExceeded::Network { held: by_network, max: self.per_network_max });
        }
        if held.total + bytes > self.total_max {
            return Err(BudgetExceeded::Total { held: held.total, max: self.total_max });
        }
        held.total += bytes;
        *held.per_network.entry(network).or_default() += bytes;
        Ok(Reservation { bytes, network, state: self.state.clone() })
    }

    /// Bytes held at this moment.
    pub fn held(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self.state.lock().unwrap_or_else(|p| p.into_inner());
        held.total -= self.bytes;
        if let Some(by_network) = held.per_network.get_mut(&self.network) {
            *by_network -= self.bytes;
            if *by_network == 0 {
                held.per_network.remove(&self.network);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_shares_and_come_back() {
        let budget = ByteBudget::new(100, 60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_network: IpAddr = "192.0.2.200".parse().unwrap();
        let b: IpAddr = "198.51.100.1".parse().unwrap();
        let first = budget.reserve(a, 50).unwrap();
        assert_eq!(
            budget.reserve(same_network, 11).err().unwrap(),
            BudgetExceeded::Network { held: 50, max: 60 }
        );
        let second = budget.reserve(b, 50).unwrap();
        assert_eq!(
            budget.reserve(b, 1).err().unwrap(),
            BudgetExceeded::Total { held: 100, max: 100 }
        );
        drop(first);
        assert_eq!(budget.held(), 50);
        assert!(budget.reserve(same_network, 50).is_ok());
        drop(second);
        assert_eq!(budget.held(), 0);
        assert!(budget.state.lock().unwrap().per_network.is_empty());
    }
}
