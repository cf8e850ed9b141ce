//! A bounded in-memory history that can also be followed: the shape shared by service logs
//! and machine events. Memory, not flash: SD cards wear.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::broadcast;

/// A record with its position in the ring's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced<T> {
    /// Increases by one per record, from 1.
    pub seq: u64,
    /// The record.
    pub item: T,
}

/// Records a follower may fall behind before it is cut off. The broadcast buffer is
/// allocated and initialised whole for every ring (a log source, the events), so it is
/// resident memory: 1024 slots cost about 80 KiB per ring, a tenth of machined's RSS over
/// a dozen rings.
const FOLLOW_BUFFER: usize = 256;

/// Keeps the last `capacity` records and broadcasts new ones to followers.
#[derive(Debug)]
pub struct Ring<T: Clone> {
    inner: Mutex<Inner<T>>,
    capacity: usize,
    followers: broadcast::Sender<Sequenced<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    records: VecDeque<Sequenced<T>>,
    next_seq: u64,
}

impl<T: Clone> Ring<T> {
    /// A ring that keeps `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Ring {
            inner: Mutex::new(Inner {
                records: VecDeque::with_capacity(capacity.min(1024)),
                next_seq: 1,
            }),
            capacity,
            followers: broadcast::channel(FOLLOW_BUFFER).0,
        }
    }

    /// Appends a record, dropping the oldest when full.
    pub fn push(&self, item: T) {
        let mut inner = self.inner.lock().expect("ring lock");
        let record = Sequenced { seq: inner.next_seq, item };
        inner.next_seq += 1;
        if inner.records.len() == self.capacity {
            inner.records.pop_front();
        }
        inner.records.push_back(record.clone());
        // Sending under the lock keeps followers' order equal to the history's.
        let _ = self.followers.send(record);
    }

    /// The last `tail` records (all with `None`), and a receiver of every later record.
    pub fn follow(
        &self,
        tail: Option<usize>,
    ) -> (Vec<Sequenced<T>>, broadcast::Receiver<Sequenced<T>>) {
        let inner = self.inner.lock().expect("ring lock");
        (Self::tail_of(&inner, tail), self.followers.subscribe())
    }

    /// The last `tail` records (all with `None`).
    pub fn snapshot(&self, tail: Option<usize>) -> Vec<Sequenced<T>> {
        Self::tail_of(&self.inner.lock().expect("ring lock"), tail)
    }

    /// Records with a sequence number above `seq`.
    pub fn since(&self, seq: u64) -> Vec<Sequenced<T>> {
        let inner = self.inner.lock().expect("ring lock");
        inner.records.iter().filter(|r| r.seq > seq).cloned().collect()
    }

    fn tail_of(inner: &Inner<T>, tail: Option<usize>) -> Vec<Sequenced<T>> {
        let skip = tail.map_or(0, |n| inner.records.len().saturating_sub(n));
        inner.records.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_numbers_them() {
        let ring = Ring::new(3);
        for i in 0..5 {
            ring.push(i);
        }
        let all: Vec<_> = ring.snapshot(None).into_iter().map(|r| (r.seq, r.item)).collect();
        assert_eq!(all, vec![(3, 2), (4, 3), (5, 4)]);
        assert_eq!(ring.snapshot(Some(1))[0].item, 4);
        assert_eq!(ring.since(4).len(), 1);
    }

    #[tokio::test]
    async fn followers_see_later_records() {
        let ring = Ring::new(8);
        ring.push("old");
        let (history, mut rx) = ring.follow(Some(10));
        assert_eq!(history.len(), 1);
        ring.push("new");
        assert_eq!(rx.recv().await.unwrap().item, "new");
    }
}
