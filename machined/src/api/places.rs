//! Places, in all and per client network, for things that hold resources: connections,
//! handshakes, file streams. One client network may take only part of them, so one host
//! cannot take them all.
//!
//! A network is a /24 for IPv4 and a /64 for IPv6: one IPv6 host commonly holds a whole /64,
//! so counting its addresses one by one would give it places without end.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The network `address` is counted under: its /24 (IPv4, also when mapped into IPv6) or
/// its /64 (IPv6).
pub fn network_of(address: IpAddr) -> IpAddr {
    let v4 = |a: Ipv4Addr| IpAddr::V4(Ipv4Addr::from(u32::from(a) & 0xffff_ff00));
    match address {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(mapped) => v4(mapped),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !u128::from(u64::MAX))),
        },
    }
}

/// Places for something, in all and per network.
#[derive(Clone)]
pub struct Pool {
    total: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_address_max: usize,
    what: &'static str,
}

/// A place in a [`Pool`]; given back when dropped.
pub struct Place {
    _total: OwnedSemaphorePermit,
    address: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Pool {
    /// `total` places, at most `per_address_max` of them for one network; `what` names the
    /// things placed, in refusals.
    pub fn new(total: usize, per_address_max: usize, what: &'static str) -> Self {
        Pool {
            total: Arc::new(Semaphore::new(total)),
            per_address: Arc::default(),
            per_address_max,
            what,
        }
    }

    /// A place for `address`, or why there is none.
    pub fn take(&self, address: IpAddr) -> Result<Place, String> {
        let address = network_of(address);
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| format!("too many {} under way", self.what))?;
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= self.per_address_max {
            return Err(format!("too many {} from this network", self.what));
        }
        *count += 1;
        Ok(Place { _total: total, address, per_address: self.per_address.clone() })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
impl Pool {
    /// Whether no address holds a place.
    pub fn is_empty(&self) -> bool {
        self.per_address.lock().unwrap().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_count_by_network() {
        let network = |a: &str| network_of(a.parse().unwrap()).to_string();
        assert_eq!(network("192.0.2.77"), "192.0.2.0");
        assert_eq!(network("::ffff:192.0.2.77"), "192.0.2.0");
        assert_eq!(network("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        let pool = Pool::new(10, 2, "things");
        let _a = pool.take("2001:db8::1".parse().unwrap()).unwrap();
        let _b = pool.take("2001:db8::ffff:2".parse().unwrap()).unwrap();
        let refused = pool.take("2001:db8::3".parse().unwrap()).err().unwrap();
        assert_eq!(refused, "too many things from this network");
        assert!(pool.take("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
