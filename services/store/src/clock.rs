//! The server clock policies are stamped and expired by.
//!
//! policy-api stamps `status` (`created_at_ms`, each rule's `expires_at_ms`) from it and the
//! sse-broadcaster drops expired rules by it, so both take the same type and a test can hand
//! both the same [`ManualClock`]. The times are Unix milliseconds that sidecars on other hosts
//! compare with their own wall clocks, so this is a wall clock, not a monotonic one. A clock
//! also knows how to wait for a moment: the system clock sleeps, the manual clock waits until a
//! test moves it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio::sync::watch;

/// Unix-millisecond time source of the BOIFI servers.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;

    /// Resolves once `now_ms() >= deadline_ms`.
    fn sleep_until_ms(&self, deadline_ms: u64) -> BoxFuture<'static, ()>;
}

/// The host's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

fn system_now_ms() -> u64 {
    // A clock set before 1970 is a broken host; 0 keeps the service running.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        system_now_ms()
    }

    fn sleep_until_ms(&self, deadline_ms: u64) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // Re-check after each sleep: the wall clock can be stepped while we wait, and an
            // expiry must never be applied early.
            loop {
                let now = system_now_ms();
                if now >= deadline_ms {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(deadline_ms - now)).await;
            }
        })
    }
}

/// A clock that only moves when told to (tests, simulations). Waiters wake when it passes
/// their deadline.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<u64>,
}

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        ManualClock {
            now: watch::Sender::new(now_ms),
        }
    }

    pub fn set(&self, now_ms: u64) {
        self.now.send_replace(now_ms);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.now.send_modify(|now| *now = now.saturating_add(ms));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    fn sleep_until_ms(&self, deadline_ms: u64) -> BoxFuture<'static, ()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone, time stops for good.
            if rx.wait_for(|now| *now >= deadline_ms).await.is_err() {
                futures::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_their_deadline_passes() {
        let clock = ManualClock::new(1_000);
        let mut sleeper = clock.sleep_until_ms(1_500);
        assert!((&mut sleeper).now_or_never().is_none());
        clock.advance_ms(499);
        assert_eq!(clock.now_ms(), 1_499);
        tokio::task::yield_now().await;
        assert!((&mut sleeper).now_or_never().is_none());
        clock.set(1_500);
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("sleeper wakes at its deadline");
        assert!(clock.sleep_until_ms(10).now_or_never().is_some());
    }

    #[test]
    fn manual_clock_saturates_instead_of_wrapping() {
        let clock = ManualClock::new(u64::MAX - 1);
        clock.advance_ms(5);
        assert_eq!(clock.now_ms(), u64::MAX);
    }

    #[tokio::test]
    async fn system_clock_sleeps_until_the_deadline() {
        let clock = SystemClock;
        let deadline = clock.now_ms() + 20;
        clock.sleep_until_ms(deadline).await;
        assert!(clock.now_ms() >= deadline);
    }
}
