//! Replicas whose clocks disagree share the PostgreSQL store: leases and rate buckets are
//! timed by the database's clock, so a replica whose clock runs a minute ahead cannot take
//! a lease another replica holds (and send its jobs a second time), and one a minute
//! behind does not hold a lease past its end. Times are given explicitly, read from each
//! replica's own clock; nothing waits.

use std::sync::Arc;

use crate::purge_store::{LEASE, job, new_id, purge, queue};
use cdnsign::purge::model::now_ms;
use cdnsign::purge::store::PurgeStore;
use cdnsign::purge::store::postgres::PgStore;

const MINUTE: i64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_is_off_keeps_to_the_database_clock_for_leases() {
    let pg = crate::pg::shared();
    let url = pg.url(&pg.create_db().await);
    let on_time = PgStore::connect(&url).await.expect("connect");
    let ahead = PgStore::connect_with_clock(&url, Arc::new(|| now_ms() + MINUTE))
        .await
        .expect("connect");
    let behind = PgStore::connect_with_clock(&url, Arc::new(|| now_ms() - MINUTE))
        .await
        .expect("connect");
    new_id(
        on_time
            .insert(purge("skew_1", "c", "k1", "site", vec![job("S1", &["/a"])]))
            .await
            .expect("insert"),
    );

    // The replica on time holds S1 for LEASE (30 s) from now.
    let t = now_ms();
    let held = on_time
        .claim("on-time", t, LEASE, &[queue("S1")])
        .await
        .expect("claim")
        .expect("S1 is free");
    // A minute ahead, its clock says the lease ended half a minute ago; the database's
    // says it has not.
    assert!(
        ahead
            .claim("ahead", t + MINUTE, LEASE, &[queue("S1")])
            .await
            .expect("claim")
            .is_none(),
        "a replica a minute ahead took a lease still held"
    );
    // Renewed, on time, at t + 20 s: held to t + 50 s.
    let held = on_time
        .renew(&held, t + 20_000, LEASE)
        .await
        .expect("renewed");
    assert!(
        ahead
            .claim_queue(&queue("S1"), "ahead", t + MINUTE + 40_000, LEASE)
            .await
            .expect("claim")
            .is_none(),
        "still held at t + 40 s"
    );
    // Past its end by the database's clock (t + 51 s), the replica ahead may take it; the
    // lease it gets ends, on its own clock, a lease from its own now.
    let taken = ahead
        .claim("ahead", t + MINUTE + 51_000, LEASE, &[queue("S1")])
        .await
        .expect("claim")
        .expect("expired by the database's clock");
    assert!(taken.epoch > held.epoch);
    let ahead_until = t + MINUTE + 51_000 + LEASE;
    assert!(
        (taken.until_ms - ahead_until).abs() < 5_000,
        "{} is not about {ahead_until} on the replica's own clock",
        taken.until_ms
    );
    // The replica a minute behind sees the lease as the database does: held until
    // t + 81 s, so not at its own t - 60 s + 80 s, and free at its t - 60 s + 82 s.
    assert!(
        behind
            .claim("behind", t - MINUTE + 80_000, LEASE, &[queue("S1")])
            .await
            .expect("claim")
            .is_none(),
        "a replica a minute behind took a lease still held"
    );
    let late = behind
        .claim("behind", t - MINUTE + 82_000, LEASE, &[queue("S1")])
        .await
        .expect("claim")
        .expect("expired by the database's clock");
    assert!(late.epoch > taken.epoch);
}
