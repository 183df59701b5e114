//! The cap on open gRPC connections (`[server] max_connections`).
//!
//! Every accepted connection takes a [`Slot`] before anything else happens to it (TLS
//! handshakes included) and gives it back when the server drops the connection. At the
//! limit, a new connection is closed at once rather than left in the listen backlog: a
//! client that gets no answer waits for its connect deadline, one that is refused tries
//! another replica now. The limit is read at each accept, so a reload applies to the next
//! connection; connections already open over a lowered limit keep running.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Open connections, shared by the accept loop and every [`Slot`].
#[derive(Debug, Clone)]
pub struct Slots {
    open: Arc<AtomicUsize>,
    closed: Arc<Notify>,
    gauge: metrics::Gauge,
    refused: metrics::Counter,
}

impl Slots {
    /// No connection open; `gauge` follows the count and `refused` counts the connections
    /// refused for want of a slot.
    pub fn new(gauge: metrics::Gauge, refused: metrics::Counter) -> Slots {
        gauge.increment(0.0);
        refused.increment(0);
        Slots {
            open: Arc::new(AtomicUsize::new(0)),
            closed: Arc::new(Notify::new()),
            gauge,
            refused,
        }
    }

    /// A slot for one more connection, or `None` (counted as refused) when `limit` are open.
    pub fn try_take(&self, limit: usize) -> Option<Slot> {
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_err()
        {
            self.refused.increment(1);
            return None;
        }
        self.gauge.increment(1.0);
        Some(Slot {
            slots: self.clone(),
        })
    }

    /// Connections holding a slot now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Completes once at most `n` connections are open (tests wait for a closed
    /// connection's slot this way rather than by time).
    pub async fn open_at_most(&self, n: usize) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            // Registered before the count is read: a slot given back in between wakes it.
            closed.as_mut().enable();
            if self.open() <= n {
                return;
            }
            closed.await;
        }
    }
}

/// One open connection's place under the limit; given back on drop.
#[derive(Debug)]
pub struct Slot {
    slots: Slots,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
        self.slots.gauge.decrement(1.0);
        self.slots.closed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Slots {
        Slots::new(metrics::Gauge::noop(), metrics::Counter::noop())
    }

    #[test]
    fn takes_up_to_the_limit_and_a_dropped_slot_makes_room() {
        let s = slots();
        let a = s.try_take(2).expect("first");
        let b = s.try_take(2).expect("second");
        assert!(s.try_take(2).is_none(), "a third over a limit of 2");
        assert_eq!(s.open(), 2);
        drop(a);
        assert_eq!(s.open(), 1);
        let c = s.try_take(2).expect("room after a close");
        drop((b, c));
        assert_eq!(s.open(), 0);
    }

    #[test]
    fn a_lowered_limit_refuses_new_connections_and_keeps_open_ones() {
        let s = slots();
        let held: Vec<Slot> = (0..3).filter_map(|_| s.try_take(3)).collect();
        assert_eq!(held.len(), 3);
        assert!(s.try_take(1).is_none());
        drop(held);
        assert!(s.try_take(1).is_some());
    }

    #[tokio::test]
    async fn open_at_most_completes_when_a_slot_is_given_back() {
        let s = slots();
        let a = s.try_take(2).expect("first");
        let _b = s.try_take(2).expect("second");
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.open_at_most(1).await }
        });
        drop(a);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken by the drop")
            .expect("task");
        assert_eq!(s.open(), 1);
    }

    #[test]
    fn a_limit_of_zero_takes_nothing() {
        assert!(slots().try_take(0).is_none());
    }
}
