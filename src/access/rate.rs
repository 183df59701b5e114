//! Per-client rate limits: token buckets.

use std::sync::Mutex;
use std::time::Instant;

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

/// A rate limit refused a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RateError {
    /// Not enough tokens now; retry after the given seconds.
    #[error("rate limit of {rate} per second exceeded; retry in {retry_after:.1}s")]
    Exceeded {
        /// The configured rate.
        rate: f64,
        /// Seconds until enough tokens have accrued.
        retry_after: f64,
    },
    /// The request alone is larger than the bucket.
    #[error("request of {asked} exceeds the rate limit burst of {burst}")]
    TooLarge {
        /// Tokens asked.
        asked: u64,
        /// Bucket size.
        burst: f64,
    },
}

impl RateError {
    /// Seconds after which the same request can succeed, if it ever can.
    pub fn retry_after(&self) -> Option<f64> {
        match self {
            RateError::Exceeded { retry_after, .. } => Some(*retry_after),
            RateError::TooLarge { .. } => None,
        }
    }
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: f64, burst: f64) -> TokenBucket {
        TokenBucket {
            rate: rate_per_second,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Whether this bucket has the given rate and burst (a reload keeps such a bucket, and
    /// so its state).
    pub fn has_limits(&self, rate_per_second: f64, burst: f64) -> bool {
        self.rate == rate_per_second && self.burst == burst
    }

    /// Takes `n` tokens or says when to retry; takes nothing on refusal.
    pub fn take(&self, n: u64) -> Result<(), RateError> {
        self.take_at(n, Instant::now())
    }

    /// [`take`](Self::take) at a given instant (tests drive the clock).
    pub fn take_at(&self, n: u64, now: Instant) -> Result<(), RateError> {
        let n_f = n as f64;
        if n_f > self.burst {
            return Err(RateError::TooLarge {
                asked: n,
                burst: self.burst,
            });
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let now = now.max(last);
        let available =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if available >= n_f {
            *state = (available - n_f, now);
            Ok(())
        } else {
            *state = (available, now);
            Err(RateError::Exceeded {
                rate: self.rate,
                retry_after: (n_f - available) / self.rate,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refuses_without_taking_and_refills_with_time() {
        let b = TokenBucket::new(10.0, 20.0);
        let t0 = Instant::now();
        assert!(b.take_at(15, t0).is_ok());
        let err = b.take_at(10, t0).expect_err("only 5 left");
        assert_eq!(err.retry_after(), Some(0.5));
        assert!(b.take_at(5, t0).is_ok());
        assert!(matches!(b.take_at(21, t0), Err(RateError::TooLarge { .. })));
        assert!(b.take_at(10, t0 + Duration::from_secs(1)).is_ok());
        // A clock reading from before the last one never adds tokens.
        assert!(b.take_at(1, t0).is_err());
    }
}
