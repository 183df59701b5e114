//! This host's clock against the database's, checked when the PostgreSQL store opens.
//!
//! Leases are judged by each replica's own clock (`now` in `PurgeStore::claim` and
//! `PurgeStore::renew`), so replicas must agree on the time to well within a lease: one
//! whose clock runs ahead by most of `[purge] lease_seconds` could take a lease another
//! replica still holds. The database's clock is the one every replica sees; a host more
//! than [`MAX_CLOCK_SKEW_MS`] from it is told so, loudly, at start.

use super::pg_pool::Pool;
use crate::purge::model::now_ms;

/// Most difference between this host's clock and the database's before a warning.
pub(super) const MAX_CLOCK_SKEW_MS: i64 = 5_000;

/// Reads the database's clock and warns when this host's is more than
/// [`MAX_CLOCK_SKEW_MS`] away. Quiet when the database cannot be asked (the store's own
/// calls report that).
pub(super) async fn check(pool: &Pool, store: &str) {
    let Ok(c) = pool.get().await else {
        return;
    };
    let before = now_ms();
    let Ok(row) = c
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )
        .await
    else {
        return;
    };
    let skew = skew_ms(before, row.get(0), now_ms());
    if skew > MAX_CLOCK_SKEW_MS {
        tracing::warn!(
            store,
            skew_ms = skew,
            "this host's clock is more than {} s from the database's: purge leases are judged by each replica's clock, so keep replicas' clocks in step (NTP); one far ahead can take another's lease",
            MAX_CLOCK_SKEW_MS / 1000
        );
    } else {
        tracing::debug!(store, skew_ms = skew, "clock agrees with the database's");
    }
}

/// How far a clock read `db` is from ours, read at `before` and `after` around it (0 when
/// it lies between: the database read its clock while we waited).
fn skew_ms(before: i64, db: i64, after: i64) -> i64 {
    if db < before {
        before - db
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
    fn skew_is_measured_outside_the_round_trip() {
        assert_eq!(skew_ms(1_000, 1_010, 1_020), 0, "read during the call");
        assert_eq!(skew_ms(1_000, 1_000, 1_020), 0);
        assert_eq!(skew_ms(1_000, 1_020, 1_020), 0);
        assert_eq!(skew_ms(10_000, 3_000, 10_020), 7_000, "database behind");
        assert_eq!(skew_ms(10_000, 19_020, 10_020), 9_000, "database ahead");
        assert!(skew_ms(10_000, 19_020, 10_020) > MAX_CLOCK_SKEW_MS);
    }
}
