//! Retries with exponential backoff and full jitter, up to a deadline.
//!
//! Only errors that a later attempt can fix are retried (throttling, "too many in
//! progress", 5xx, transport failures); everything else returns at once. The next sleep
//! never runs past the deadline: when it would, the last error is returned.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Whether an error is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again after backoff (or after the given delay, when the server said so).
    After(Option<Duration>),
    /// Give up now.
    Never,
}

/// Backoff settings.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay ceiling.
    pub base: Duration,
    /// Largest delay ceiling.
    pub max: Duration,
}

impl Backoff {
    /// Delay before attempt `n + 1` (n ≥ 1 failures so far): uniform in
    /// `[0, min(max, base * 2^(n-1))]` ("full jitter").
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.max);
        let r = uuid::Uuid::new_v4().as_u64_pair().0;
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(if millis == 0 { 0 } else { r % (millis + 1) })
    }
}

/// Runs `op` until it succeeds, `classify` says [`Retry::Never`], or the deadline would
/// pass before the next attempt. Returns the result and the number of attempts made.
pub async fn retry<T, E, F, Fut>(
    backoff: Backoff,
    deadline: Instant,
    mut op: F,
    classify: impl Fn(&E) -> Retry,
) -> (Result<T, E>, u32)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let err = match op(attempt).await {
            Ok(v) => return (Ok(v), attempt),
            Err(e) => e,
        };
        let wait = match classify(&err) {
            Retry::Never => return (Err(err), attempt),
            Retry::After(Some(d)) => d.max(backoff.delay(attempt)),
            Retry::After(None) => backoff.delay(attempt),
        };
        if Instant::now() + wait >= deadline {
            return (Err(err), attempt);
        }
        tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, "retrying");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Virtual time: the waits advance the clock, never the wall clock.
    #[tokio::test(start_paused = true)]
    async fn retries_what_helps_stops_at_fatal_and_at_the_deadline() {
        let b = Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(4),
        };
        let far = Instant::now() + Duration::from_secs(5);
        let (r, n) = retry(
            b,
            far,
            |a| async move { if a < 4 { Err("throttled") } else { Ok(a) } },
            |_| Retry::After(None),
        )
        .await;
        assert_eq!((r, n), (Ok(4), 4));

        let (r, n) = retry(
            b,
            far,
            |_| async { Err::<(), _>("denied") },
            |_| Retry::Never,
        )
        .await;
        assert_eq!((r, n), (Err("denied"), 1));

        let soon = Instant::now() + Duration::from_millis(30);
        let started = Instant::now();
        let (r, n) = retry(
            b,
            soon,
            |_| async { Err::<(), _>("5xx") },
            |_| Retry::After(Some(Duration::from_millis(10))),
        )
        .await;
        assert!(r.is_err());
        // At 0, 10 and 20 ms; a fourth would start at the 30 ms deadline.
        assert_eq!(n, 3, "{n} attempts");
        assert_eq!(started.elapsed(), Duration::from_millis(20));
    }

    #[test]
    fn delays_grow_exponentially_and_stay_under_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
        };
        for n in 1..30 {
            let d = b.delay(n);
            let ceiling = (100u64 << (n - 1).min(20)).min(1_000);
            assert!(d.as_millis() as u64 <= ceiling, "{n}: {d:?}");
        }
    }
}
