//! The restart back-off of the upstream kubelet: a crashed container restarts at once the
//! first time, then after 10 s, 20 s, 40 s ... up to 5 min; a container that ran 10 min
//! starts over. Image pulls that fail back off the same way.

use std::time::Duration;

/// The first delay.
const INITIAL: Duration = Duration::from_secs(10);
/// The longest delay.
const MAX: Duration = Duration::from_secs(300);
/// A run this long forgets earlier crashes.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// The delays of one container (or one image pull).
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    /// The delay before the next retry; None until the first failure.
    next: Option<Duration>,
}

impl Backoff {
    /// The delay before retrying a failure, and the one after it.
    pub fn failed(&mut self) -> Duration {
        let delay = self.next.unwrap_or(Duration::ZERO);
        self.next = Some(match self.next {
            None => INITIAL,
            Some(current) => (current * 2).min(MAX),
        });
        delay
    }

    /// Forgets past failures (a long run, an operator's restart).
    pub fn reset(&mut self) {
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_at_once_then_doubles_from_ten_seconds_to_five_minutes() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..8).map(|_| backoff.failed().as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.failed(), Duration::ZERO);
        assert_eq!(backoff.failed(), INITIAL);
    }
}
