//! How many signatures an 8-lane computation must carry to cost less than OpenSSL signing
//! them one by one: measured on this CPU, once per process and algorithm.
//!
//! An 8-lane computation costs the same whatever the number of lanes used, so a flush of
//! `n` signatures is worth the lanes only when `n` OpenSSL signatures would cost more. The
//! ratio is the CPU's: by the figures for its Intel Xeon, 8 RSA-2048 lanes cost about
//! 2.8 OpenSSL signatures; on the AMD EPYC of docs/performance.md about 4.6 (OpenSSL uses
//! AVX-512 IFMA on both; the lanes gain less on the EPYC). A fixed
//! threshold is wrong on one of the two: too low, a part-filled flush spends more CPU and
//! more time (1.2 ms against 4 x 0.25 ms) than OpenSSL would; too high, lanes are left idle.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cdnsign_cryptomb::LANES;

/// Timed runs of each kind; the fastest counts (the least disturbed by other work).
const RUNS: usize = 3;

/// Fills measured so far, by algorithm label.
static MEASURED: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());

/// The fewest signatures worth a lane computation, from the time of one full lane
/// computation and of one OpenSSL signature: the smallest `n` with `n * one > flush`,
/// from 1 (lanes cost less than one OpenSSL signature) to [`LANES`].
pub fn fill_from(flush: Duration, one: Duration) -> usize {
    if one.is_zero() {
        return LANES;
    }
    let whole = flush.as_nanos() / one.as_nanos();
    usize::try_from(whole)
        .unwrap_or(usize::MAX)
        .saturating_add(1)
        .clamp(1, LANES)
}

/// The fastest of [`RUNS`] runs of `f`, after one unmeasured run (first-call costs: page
/// faults, the library's lazily built tables).
fn fastest(mut f: impl FnMut()) -> Duration {
    f();
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or(Duration::ZERO)
}

/// The fill for `algorithm`: measured with `flush` (one full lane computation) and `one`
/// (one OpenSSL signature) the first time, remembered afterwards, and logged when measured.
/// Every call (every key load) publishes it as `cdnsign_multibuffer_min_lane_fill{algorithm}`,
/// so a server whose metrics recorder came after the measurement still shows it.
pub fn min_lane_fill(algorithm: &'static str, flush: impl FnMut(), one: impl FnMut()) -> usize {
    let fill = remembered_or_measured(algorithm, flush, one);
    metrics::gauge!(
        crate::metrics::MULTIBUFFER_MIN_LANE_FILL,
        "algorithm" => algorithm
    )
    .set(fill as f64);
    fill
}

fn remembered_or_measured(
    algorithm: &'static str,
    flush: impl FnMut(),
    one: impl FnMut(),
) -> usize {
    let mut measured = MEASURED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(fill) = measured.get(algorithm) {
        return *fill;
    }
    let (flush, one) = (fastest(flush), fastest(one));
    let fill = fill_from(flush, one);
    measured.insert(algorithm, fill);
    drop(measured);
    tracing::info!(
        algorithm,
        lane_flush_us = flush.as_micros() as u64,
        openssl_signature_us = one.as_micros() as u64,
        min_lane_fill = fill,
        "multi-buffer lanes measured: flushes of fewer signatures sign one by one with OpenSSL"
    );
    fill
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn the_fill_is_the_fewest_signatures_that_cost_more_one_by_one_than_a_flush() {
        // This EPYC: 8 RSA lanes 1,210 us, OpenSSL 255 us -> 4 signatures cost 1,020 us,
        // 5 cost 1,275 us: lanes from 5.
        assert_eq!(fill_from(us(1210), us(255)), 5);
        // The Intel Xeon: 8 lanes ~950 us, OpenSSL ~330 us -> lanes from 3.
        assert_eq!(fill_from(us(950), us(330)), 3);
        // Exactly 3x: 3 one by one cost the same as the flush, 4 cost more.
        assert_eq!(fill_from(us(300), us(100)), 4);
        // Lanes cheaper than one OpenSSL signature: even a lone one goes in lanes.
        assert_eq!(fill_from(us(90), us(100)), 1);
        // Never more than the lanes there are, whatever the timing says.
        assert_eq!(fill_from(us(10_000), us(100)), LANES);
        assert_eq!(fill_from(us(10), Duration::ZERO), LANES);
    }

    #[test]
    fn measured_once_per_algorithm_then_remembered() {
        let mut flushes = 0;
        let mut ones = 0;
        let first = min_lane_fill("calibration_test_only", || flushes += 1, || ones += 1);
        assert_eq!((flushes, ones), (RUNS + 1, RUNS + 1));
        assert!((1..=LANES).contains(&first));
        let again = min_lane_fill(
            "calibration_test_only",
            || panic!("not measured again"),
            || panic!("not measured again"),
        );
        assert_eq!(again, first);
    }
}
