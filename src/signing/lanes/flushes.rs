//! How the lane queues count their flushes: by what started each one (`Trigger`), in the
//! lanes' own counters (`FlushCounts`, which the tests read) and in
//! `cdnsign_multibuffer_flushes_total{trigger}` and the lanes histogram, through handles
//! made once (`FlushMetrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Histogram};

use crate::metrics::{MULTIBUFFER_FLUSH_LANES, MULTIBUFFER_FLUSHES};

/// What started a flush.
#[derive(Clone, Copy)]
pub(super) enum Trigger {
    Full,
    Timer,
    Idle,
    Freed,
}

/// What started a flush and how it signs: the `trigger` label of
/// `cdnsign_multibuffer_flushes_total`.
#[derive(Clone, Copy)]
pub(super) enum FlushKind {
    Full,
    Timer,
    TimerOneByOne,
    Idle,
    IdleOneByOne,
    Freed,
    FreedOneByOne,
}

impl FlushKind {
    pub(super) const ALL: [FlushKind; 7] = [
        FlushKind::Full,
        FlushKind::Timer,
        FlushKind::TimerOneByOne,
        FlushKind::Idle,
        FlushKind::IdleOneByOne,
        FlushKind::Freed,
        FlushKind::FreedOneByOne,
    ];

    /// A full queue always goes to the lanes; the others sign one by one when too small.
    pub(super) fn of(trigger: Trigger, one_by_one: bool) -> FlushKind {
        match (trigger, one_by_one) {
            (Trigger::Full, _) => FlushKind::Full,
            (Trigger::Timer, false) => FlushKind::Timer,
            (Trigger::Timer, true) => FlushKind::TimerOneByOne,
            (Trigger::Idle, false) => FlushKind::Idle,
            (Trigger::Idle, true) => FlushKind::IdleOneByOne,
            (Trigger::Freed, false) => FlushKind::Freed,
            (Trigger::Freed, true) => FlushKind::FreedOneByOne,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            FlushKind::Full => "full",
            FlushKind::Timer => "timer",
            FlushKind::TimerOneByOne => "timer_one_by_one",
            FlushKind::Idle => "idle",
            FlushKind::IdleOneByOne => "idle_one_by_one",
            FlushKind::Freed => "freed",
            FlushKind::FreedOneByOne => "freed_one_by_one",
        }
    }
}

/// The flush metrics' handles, made once with the queues (after the server installed its
/// recorder), so a flush never looks a metric up by name.
pub(super) struct FlushMetrics {
    /// By [`FlushKind`], in [`FlushKind::ALL`]'s order.
    flushes: [Counter; 7],
    /// Signatures per flush.
    lanes: Histogram,
}

impl FlushMetrics {
    pub(super) fn new() -> FlushMetrics {
        FlushMetrics {
            flushes: FlushKind::ALL
                .map(|kind| metrics::counter!(MULTIBUFFER_FLUSHES, "trigger" => kind.label())),
            lanes: metrics::histogram!(MULTIBUFFER_FLUSH_LANES),
        }
    }

    pub(super) fn record(&self, kind: FlushKind, signatures: usize) {
        self.flushes[kind as usize].increment(1);
        self.lanes.record(signatures as f64);
    }
}

/// Flushes so far, by what triggered them.
#[derive(Debug, Default)]
pub struct FlushCounts {
    /// Flushes of a full queue (every lane used).
    pub full: AtomicU64,
    /// Flushes of a queue whose first signature had waited `multibuffer_flush_us`.
    pub timer: AtomicU64,
    /// Flushes made at once because a pool thread was free (`trigger="idle"`).
    pub idle: AtomicU64,
    /// Flushes of a waiting queue started as another flush ended.
    pub freed: AtomicU64,
    /// Of the timer and idle flushes, those too small to be worth a lane computation
    /// ([`SigningKey::min_lane_fill`](crate::signing::keys::SigningKey::min_lane_fill)), signed one by one with OpenSSL.
    pub one_by_one: AtomicU64,
    /// Signatures flushed, over all flushes.
    pub signatures: AtomicU64,
}

impl FlushCounts {
    /// Counts one flush of `signatures` started by `trigger`.
    pub(super) fn record(&self, trigger: Trigger, one_by_one: bool, signatures: usize) {
        let counter = match trigger {
            Trigger::Full => &self.full,
            Trigger::Timer => &self.timer,
            Trigger::Idle => &self.idle,
            Trigger::Freed => &self.freed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.signatures
            .fetch_add(signatures as u64, Ordering::Relaxed);
        if one_by_one {
            self.one_by_one.fetch_add(1, Ordering::Relaxed);
        }
    }
}
