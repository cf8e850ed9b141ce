//! Places for TLS handshakes under way. A handshake is the only thing a client without
//! credentials can make the node hold, so when every place is taken the oldest unfinished
//! handshake is dropped for the new one: a client that sends nothing loses its place to the
//! next comer, instead of a silent crowd keeping every admin out until their deadlines pass.
//! One network (see [`network_of`]) may hold only part of the places, and is refused beyond.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::api::places::network_of;

/// Handshakes under way, in all and per network.
#[derive(Clone)]
pub struct Handshakes {
    state: Arc<Mutex<State>>,
    total_max: usize,
    per_network_max: usize,
}

#[derive(Default)]
struct State {
    /// Handshakes by the order they started in: the first is the oldest.
    started: BTreeMap<u64, (IpAddr, CancellationToken)>,
    per_network: HashMap<IpAddr, usize>,
    next: u64,
}

/// A handshake's place; given back when dropped.
pub struct HandshakePlace {
    id: u64,
    evicted: CancellationToken,
    state: Arc<Mutex<State>>,
}

impl Handshakes {
    /// `total_max` places, `per_network_max` of them at most for one network.
    pub fn new(total_max: usize, per_network_max: usize) -> Self {
        Handshakes { state: Arc::default(), total_max, per_network_max }
    }

    /// A place for a handshake from `address`, made by dropping the oldest handshake when all
    /// are taken; or why there is none.
    pub fn take(&self, address: IpAddr) -> Result<HandshakePlace, String> {
        let network = network_of(address);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.per_network.get(&network).copied().unwrap_or(0) >= self.per_network_max {
            return Err("too many handshakes from this network".into());
        }
        if state.started.len() >= self.total_max {
            if let Some((_, (oldest, evicted))) = state.started.pop_first() {
                evicted.cancel();
                state.release(oldest);
            }
        }
        let id = state.next;
        state.next += 1;
        let evicted = CancellationToken::new();
        state.started.insert(id, (network, evicted.clone()));
        *state.per_network.entry(network).or_default() += 1;
        Ok(HandshakePlace { id, evicted, state: self.state.clone() })
    }

    /// Handshakes under way.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).started.len()
    }

    /// Whether no handshake is under way.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn release(&mut self, network: IpAddr) {
        if let Some(count) = self.per_network.get_mut(&network) {
            *count -= 1;
            if *count == 0 {
                self.per_network.remove(&network);
            }
        }
    }
}

impl HandshakePlace {
    /// Resolves when a newer handshake took this place.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }
}

impl Drop for HandshakePlace {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((network, _)) = state.started.remove(&self.id) {
            state.release(network);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(network: u8, host: u8) -> IpAddr {
        IpAddr::from([10, 0, network, host])
    }

    #[tokio::test]
    async fn a_full_pool_drops_its_oldest_handshake() {
        let handshakes = Handshakes::new(4, 2);
        let places: Vec<_> = (0..4).map(|i| handshakes.take(address(i / 2, i)).unwrap()).collect();
        // Full: the newcomer from a third network takes the oldest one's place.
        let newcomer = handshakes.take(address(9, 1)).unwrap();
        assert_eq!(handshakes.len(), 4);
        tokio::time::timeout(std::time::Duration::from_secs(1), places[0].evicted())
            .await
            .expect("the oldest handshake was not dropped");
        assert!(!places[1].evicted.is_cancelled() && !newcomer.evicted.is_cancelled());
        // The evicted network's count went down with it.
        assert!(handshakes.take(address(0, 7)).is_ok());
        drop(places);
        drop(newcomer);
        assert!(handshakes.is_empty());
        assert!(handshakes.state.lock().unwrap().per_network.is_empty());
    }

    #[test]
    fn one_network_is_refused_beyond_its_share() {
        let handshakes = Handshakes::new(100, 2);
        let _a = handshakes.take(address(1, 1)).unwrap();
        let _b = handshakes.take(address(1, 2)).unwrap();
        assert_eq!(
            handshakes.take(address(1, 3)).err().unwrap(),
            "too many handshakes from this network"
        );
        assert!(handshakes.take(address(2, 1)).is_ok());
    }
}
