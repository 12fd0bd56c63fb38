//! The event bus: every event the daemon publishes gets the next sequence number, then goes to
//! every subscriber (followers, the audit log, forwarders, metrics). The numbers continue across
//! restarts (from the audit log), so a follower that reconnects can ask for what it missed.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::{broadcast, Notify};

use crate::events::event::Event;

/// Events buffered for each subscriber before the slowest is told it lost some.
pub const SUBSCRIBER_BUFFER: usize = 4096;

pub struct Bus {
    /// Shared, not copied, between subscribers.
    sender: broadcast::Sender<Arc<Event>>,
    /// The next sequence number; the lock also orders sends, so that subscribers see numbers
    /// rising by one.
    next: Mutex<u64>,
    lost: [AtomicU64; Stage::ALL.len()],
    /// The sequence number after the last event the audit log writer wrote: the subscriber
    /// that must not fall behind, so the reader of the kernel's records paces itself to it, and
    /// followers are sent only what the log holds (so that one resuming after a restart finds
    /// in the log whatever it may have missed).
    audit_written: AtomicU64,
    written: Notify,
}

/// Where along the way events were lost (each is also reported where it happened: a `lost`
/// event, a follower's `lost` marker, an audit log record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The ring buffer was full (counted by the programs, per agent).
    Kernel,
    /// A kernel record the daemon could not decode.
    Decode,
    /// A follower (`clawctl deny-log --follow`) fell behind.
    Follower,
    /// The audit log writer fell behind or could not write.
    Audit,
    /// A forwarder fell behind the bus or its spool overflowed.
    Forward,
    /// The metrics page's counter of denials fell behind.
    Metrics,
    /// Records a claw-agent read from the kernel but was killed before logging them (told by
    /// the next one, from the records' numbers).
    Restart,
    /// Landlock's audit records the kernel dropped before claw-agent read them (its socket's
    /// buffer overflowed), or denials whose domain was never told.
    Landlock,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Kernel,
        Stage::Decode,
        Stage::Follower,
        Stage::Audit,
        Stage::Forward,
        Stage::Metrics,
        Stage::Restart,
        Stage::Landlock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Kernel => "kernel",
            Stage::Decode => "decode",
            Stage::Follower => "follower",
            Stage::Audit => "audit",
            Stage::Forward => "forward",
            Stage::Metrics => "metrics",
            Stage::Restart => "restart",
            Stage::Landlock => "landlock",
        }
    }
}

impl Bus {
    /// A bus whose first event gets `first_seq`.
    pub fn new(first_seq: u64) -> Self {
        Self::with_capacity(first_seq, SUBSCRIBER_BUFFER)
    }

    /// A bus that buffers `capacity` events for each subscriber.
    pub fn with_capacity(first_seq: u64, capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity).0,
            next: Mutex::new(first_seq),
            lost: Default::default(),
            audit_written: AtomicU64::new(first_seq),
            written: Notify::new(),
        }
    }

    /// Numbers and sends `event`; returns it as subscribers share it.
    pub fn publish(&self, mut event: Event) -> Arc<Event> {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        event.seq = *next;
        *next += 1;
        let event = Arc::new(event);
        // No subscriber yet is not an error: the daemon's own log has every event.
        let _ = self.sender.send(event.clone());
        event
    }

    /// A subscription for a sink whose losses count at `stage`. Its first event is the next one
    /// published; earlier ones are in the audit log.
    pub fn subscribe(self: &Arc<Self>, stage: Stage) -> Subscription {
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        Subscription {
            receiver: self.sender.subscribe(),
            bus: self.clone(),
            stage,
            first_seq: *next,
        }
    }

    /// The audit log writer has written (or counted as lost) every event before `next`.
    pub fn mark_written(&self, next: u64) {
        self.audit_written.fetch_max(next, Ordering::AcqRel);
        self.written.notify_waiters();
    }

    /// Waits until the audit log holds every event before `next`, at most `timeout` (the
    /// writer is stuck): whether it does.
    pub async fn until_written(&self, next: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.written.notified();
            if self.audit_written.load(Ordering::Acquire) >= next {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.audit_written.load(Ordering::Acquire) >= next;
            }
        }
    }

    /// The sequence number after the last event the audit log writer has handled.
    pub fn audit_written(&self) -> u64 {
        self.audit_written.load(Ordering::Acquire)
    }

    /// Events published that the audit log writer has not written yet. Kept below the buffer,
    /// it never loses any: the kernel's ring buffer holds (or counts, per agent) the rest.
    pub fn audit_lag(&self) -> u64 {
        self.next_seq()
            .saturating_sub(self.audit_written.load(Ordering::Acquire))
    }

    /// Subscribers now (followers, the audit log writer, forwarders).
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        *self.next.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `count` events lost at `stage`.
    pub fn count_lost(&self, stage: Stage, count: u64) {
        self.lost[stage as usize].fetch_add(count, Ordering::Relaxed);
    }

    pub fn lost(&self, stage: Stage) -> u64 {
        self.lost[stage as usize].load(Ordering::Relaxed)
    }
}

/// What a sink receives from its subscription: the next event, or how many events it missed
/// because it fell behind (already counted as lost at its stage).
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Event(Arc<Event>),
    Gap(u64),
}

/// One sink's place on the bus: audit log, forwarder, metrics, follower. It counts its own
/// losses, so a sink only writes what it is given.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Event>>,
    bus: Arc<Bus>,
    stage: Stage,
    first_seq: u64,
}

impl Subscription {
    /// The sequence number of the first event this subscription receives.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The next delivery; None once the bus is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        let received = self.receiver.recv().await;
        self.deliver(received)
    }

    /// The next delivery if one has arrived; None if none waits (or the bus is gone).
    pub fn try_next(&mut self) -> Option<Delivery> {
        let received = self.receiver.try_recv().map_err(|err| match err {
            broadcast::error::TryRecvError::Lagged(count) => {
                broadcast::error::RecvError::Lagged(count)
            }
            _ => broadcast::error::RecvError::Closed,
        });
        self.deliver(received)
    }

    fn deliver(
        &self,
        received: Result<Arc<Event>, broadcast::error::RecvError>,
    ) -> Option<Delivery> {
        match received {
            Ok(event) => Some(Delivery::Event(event)),
            Err(broadcast::error::RecvError::Lagged(count)) => {
                self.bus.count_lost(self.stage, count);
                Some(Delivery::Gap(count))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::tests::sample;

    #[tokio::test]
    async fn events_are_numbered_in_the_order_subscribers_see_them() {
        let bus = Arc::new(Bus::new(7));
        bus.publish(sample("deny"));
        let mut events = bus.subscribe(Stage::Follower);
        assert_eq!(events.first_seq(), 8);
        bus.publish(sample("deny"));
        bus.publish(sample("oom"));
        let seq = |delivery| match delivery {
            Some(Delivery::Event(event)) => (event.seq, event.kind),
            other => panic!("{other:?}"),
        };
        assert_eq!(seq(events.next().await).0, 8);
        assert_eq!(
            seq(events.next().await),
            (9, crate::events::event::Kind::Oom)
        );
        assert_eq!(events.try_next(), None);
    }

    /// A sink that falls behind is told how many it missed, and the loss is counted at its
    /// stage: no sink counts its own.
    #[tokio::test]
    async fn a_sink_behind_gets_a_counted_gap() {
        let bus = Arc::new(Bus::with_capacity(0, 2));
        let mut events = bus.subscribe(Stage::Forward);
        for _ in 0..5 {
            bus.publish(sample("deny"));
        }
        assert_eq!(events.try_next(), Some(Delivery::Gap(3)));
        assert_eq!(bus.lost(Stage::Forward), 3);
        assert_eq!(bus.lost(Stage::Follower), 0);
        let Some(Delivery::Event(event)) = events.next().await else {
            panic!("the two newest events stay")
        };
        assert_eq!(event.seq, 3);
        drop(bus);
    }
}
