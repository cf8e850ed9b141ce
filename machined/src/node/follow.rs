//! Log follows (`logs`, `dmesg`, `events`): a ring's last records, then with `follow` its new
//! ones until the reader leaves, on one channel the caller converts from.

use tokio::sync::{broadcast, mpsc};

use crate::logs::ring::{Ring, Sequenced};

use super::NodeError;

/// What to read of a ring.
#[derive(Debug, Clone, Copy)]
pub struct FollowRequest {
    /// The last records to send (all: none).
    pub tail: Option<usize>,
    /// Whether to go on with new records.
    pub follow: bool,
}

/// The records `request` asks for of `ring` now, and the receiver of the records to come.
pub type Followed<T> = (Vec<Sequenced<T>>, Option<broadcast::Receiver<Sequenced<T>>>);

/// Takes what `request` asks for of `ring`; the history is copied at once, so the caller may
/// let go of the ring.
pub fn take<T: Clone>(ring: &Ring<T>, request: FollowRequest) -> Followed<T> {
    if request.follow {
        let (history, rx) = ring.follow(request.tail);
        (history, Some(rx))
    } else {
        (ring.snapshot(request.tail), None)
    }
}

/// Sends `followed`'s history, then its new records until `tx`'s reader leaves, each
/// converted by `convert`. A follower that falls behind the ring is told so and ends.
pub async fn send<T: Clone, U, E: From<NodeError>>(
    (history, mut follow): Followed<T>,
    tx: mpsc::Sender<Result<U, E>>,
    convert: impl Fn(Sequenced<T>) -> U,
) {
    for record in history {
        if tx.send(Ok(convert(record))).await.is_err() {
            return;
        }
    }
    let Some(rx) = follow.as_mut() else { return };
    loop {
        let record = tokio::select! {
            record = rx.recv() => record,
            _ = tx.closed() => return,
        };
        match record {
            Ok(record) => {
                if tx.send(Ok(convert(record))).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let _ = tx.send(Err(NodeError::FellBehind(n).into())).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(items: &[&'static str]) -> Ring<&'static str> {
        let ring = Ring::new(16);
        for item in items {
            ring.push(*item);
        }
        ring
    }

    #[tokio::test]
    async fn the_tail_then_the_end_without_follow() {
        let ring = ring_of(&["a", "b", "c"]);
        let (tx, mut rx) = mpsc::channel::<Result<&str, NodeError>>(8);
        send(take(&ring, FollowRequest { tail: Some(2), follow: false }), tx, |r| r.item).await;
        assert_eq!(rx.recv().await.unwrap().unwrap(), "b");
        assert_eq!(rx.recv().await.unwrap().unwrap(), "c");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_follower_gets_new_records_until_it_leaves() {
        let ring = ring_of(&["a"]);
        let (tx, mut rx) = mpsc::channel::<Result<&str, NodeError>>(8);
        let followed = take(&ring, FollowRequest { tail: None, follow: true });
        let sender = tokio::spawn(send(followed, tx, |r| r.item));
        assert_eq!(rx.recv().await.unwrap().unwrap(), "a");
        ring.push("b");
        assert_eq!(rx.recv().await.unwrap().unwrap(), "b");
        drop(rx);
        sender.await.unwrap();
    }
}
