//! The database's clock, as this host sees it: leases and shared rate buckets are judged by
//! it, not by each replica's own clock.
//!
//! Callers of `PurgeStore` pass their own `now`. For the PostgreSQL store, several replicas
//! compare each other's lease ends: one whose clock ran ahead by most of
//! `[purge] lease_seconds` would take a lease another replica still holds, and send its
//! jobs a second time. So the store measures how far this host's clock is from the
//! database's ([`DbClock::measure`], at start and then at most once a minute, one query),
//! and moves every `now` it is given for a lease or a rate bucket by that much. The error
//! left is under one round trip to the database. A host more than [`MAX_CLOCK_SKEW_MS`] off
//! is still told so, loudly: the other times (when a retry is due, a provider's daily
//! quota) follow its own clock.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::pg_pool::Pool;

/// Most difference between this host's clock and the database's before a warning.
pub(super) const MAX_CLOCK_SKEW_MS: i64 = 5_000;

/// How long a measured offset is used before it is measured again.
const REMEASURE_AFTER: Duration = Duration::from_secs(60);

/// This host's clock, in Unix milliseconds (injectable: tests play a host whose clock is off).
pub type LocalClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The database's clock as an offset from this host's.
pub(super) struct DbClock {
    local: LocalClock,
    /// What to add to a time read from `local` to get the database's time.
    offset_ms: AtomicI64,
    /// When the offset was last measured (`None`: never, or the database did not answer).
    measured: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for DbClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbClock")
            .field("offset_ms", &self.offset_ms.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl DbClock {
    /// No offset until [`measure`](Self::measure).
    pub(super) fn new(local: LocalClock) -> DbClock {
        DbClock {
            local,
            offset_ms: AtomicI64::new(0),
            measured: Mutex::new(None),
        }
    }

    /// `local_ms`, a time on this host's clock, on the database's.
    pub(super) fn to_db(&self, local_ms: i64) -> i64 {
        local_ms.saturating_add(self.offset_ms.load(Ordering::Acquire))
    }

    /// `db_ms`, a time on the database's clock, on this host's.
    pub(super) fn to_local(&self, db_ms: i64) -> i64 {
        db_ms.saturating_sub(self.offset_ms.load(Ordering::Acquire))
    }

    /// Measures the offset again when the last measurement is older than a minute (or
    /// failed). Quiet when the database cannot be asked: the offset measured before stays,
    /// and the store's own call reports the database.
    pub(super) async fn refresh(&self, pool: &Pool, store: &str) {
        let stale = self
            .measured
            .lock()
            .map(|m| m.is_none_or(|at| at.elapsed() >= REMEASURE_AFTER))
            .unwrap_or(true);
        if stale {
            self.measure(pool, store, false).await;
        }
    }

    /// Reads the database's clock between two readings of ours and keeps the difference;
    /// warns when it is more than [`MAX_CLOCK_SKEW_MS`] (at start, `first`; afterwards only
    /// when it changed by that much, so a steady skew is said once).
    pub(super) async fn measure(&self, pool: &Pool, store: &str, first: bool) {
        let Ok(c) = pool.get().await else {
            return;
        };
        let before = (self.local)();
        let Ok(row) = c
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .await
        else {
            return;
        };
        let offset = offset_ms(before, row.get(0), (self.local)());
        let was = self.offset_ms.swap(offset, Ordering::AcqRel);
        if let Ok(mut m) = self.measured.lock() {
            *m = Some(Instant::now());
        }
        let moved = (offset - was).abs() > MAX_CLOCK_SKEW_MS;
        if offset.abs() > MAX_CLOCK_SKEW_MS && (first || moved) {
            tracing::warn!(
                store,
                skew_ms = offset,
                "this host's clock is more than {} s from the database's: purge leases and rate limits follow the database's clock, but retry times and provider quotas follow this host's; keep it in step (NTP)",
                MAX_CLOCK_SKEW_MS / 1000
            );
        } else {
            tracing::debug!(store, skew_ms = offset, "clock against the database's");
        }
    }
}

/// What to add to our clock to get the database's, from a database reading `db` taken
/// between our readings `before` and `after`: 0 when it lies between them (the database
/// read its clock while we waited), else the distance to the nearer end (so the error is
/// under one round trip, and never invented from the round trip alone).
fn offset_ms(before: i64, db: i64, after: i64) -> i64 {
    if db < before {
        db - before
    } else if db > after {
        db - after
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_measured_outside_the_round_trip() {
        assert_eq!(offset_ms(1_000, 1_010, 1_020), 0, "read during the call");
        assert_eq!(offset_ms(1_000, 1_000, 1_020), 0);
        assert_eq!(offset_ms(1_000, 1_020, 1_020), 0);
        assert_eq!(offset_ms(10_000, 3_000, 10_020), -7_000, "database behind");
        assert_eq!(offset_ms(10_000, 19_020, 10_020), 9_000, "database ahead");
    }

    #[test]
    fn times_move_by_the_offset_both_ways() {
        let clock = DbClock::new(Arc::new(|| 0));
        assert_eq!(clock.to_db(1_000), 1_000, "no offset before a measurement");
        clock.offset_ms.store(-60_000, Ordering::Release);
        assert_eq!(clock.to_db(1_060_000), 1_000_000);
        assert_eq!(clock.to_local(1_000_000), 1_060_000);
        assert_eq!(clock.to_db(i64::MIN), i64::MIN, "saturates");
    }
}
