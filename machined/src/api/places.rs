//! Places, in all and per client address, for things that hold resources: connections,
//! handshakes, file streams. One client address may take only part of them, so one host
//! cannot take them all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Places for something, in all and per address.
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
    /// `total` places, at most `per_address_max` of them for one address; `what` names the
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
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| format!("too many {} under way", self.what))?;
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= self.per_address_max {
            return Err(format!("too many {} from this address", self.what));
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
