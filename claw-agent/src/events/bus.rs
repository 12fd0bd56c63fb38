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
    /// A forwarder's spool overflowed.
    Forward,
    /// Records a claw-agent read from the kernel but was killed before logging them (told by
    /// the next one, from the records' numbers).
    Restart,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Kernel,
        Stage::Decode,
        Stage::Follower,
        Stage::Audit,
        Stage::Forward,
        Stage::Restart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Kernel => "kernel",
            Stage::Decode => "decode",
            Stage::Follower => "follower",
            Stage::Audit => "audit",
            Stage::Forward => "forward",
            Stage::Restart => "restart",
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

    /// A subscription, and the sequence number of the first event it will receive: earlier ones
    /// are in the audit log.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Event>>, u64) {
        let next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        (self.sender.subscribe(), *next)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::tests::sample;

    #[tokio::test]
    async fn events_are_numbered_in_the_order_subscribers_see_them() {
        let bus = Bus::new(7);
        bus.publish(sample("deny"));
        let (mut events, first) = bus.subscribe();
        assert_eq!(first, 8);
        bus.publish(sample("deny"));
        bus.publish(sample("oom"));
        assert_eq!(events.recv().await.unwrap().seq, 8);
        let second = events.recv().await.unwrap();
        assert_eq!((second.seq, second.kind.as_str()), (9, "oom"));
    }
}
