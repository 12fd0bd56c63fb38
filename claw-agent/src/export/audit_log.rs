//! The audit log sink: every event, hash-chained, written in batches of what has arrived.
//! Events this writer fell behind on, or could not write (a full disk), are recorded as a count
//! once it can write again. The bus learns the sequence number after the last event handled
//! (for followers, which are sent only what the log holds, and the kernel reader's pacing).

use std::{path::Path, sync::Arc, time::Duration};

use crate::events::{
    audit,
    bus::{Bus, Delivery, Stage, Subscription},
};

/// Records written with one write(2) at most.
const BATCH: usize = 1024;

/// How often the log is synced to disk.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Opens the log at `path` (rotating at `max_bytes`) and starts its writer on a thread of its
/// own: hashing and writing every record must not wait behind the tasks that serve followers,
/// or it falls behind in a storm. Start it before anything publishes: the log gets every event
/// from then on.
pub fn start(path: &Path, max_bytes: u64, bus: &Arc<Bus>) -> anyhow::Result<()> {
    let writer = audit::Writer::open(path, max_bytes)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let events = bus.subscribe(Stage::Audit);
    let task = write(writer, events, bus.clone());
    std::thread::Builder::new()
        .name("audit-log".to_owned())
        .spawn(move || runtime.block_on(task))?;
    Ok(())
}

/// Writes what `events` delivers to `writer` until the bus is gone.
async fn write(mut writer: audit::Writer, mut events: Subscription, bus: Arc<Bus>) {
    let mut sync = tokio::time::interval(SYNC_EVERY);
    let entry = |delivery: Delivery| match delivery {
        Delivery::Event(event) => audit::Entry::Event(event),
        Delivery::Gap(lost) => audit::Entry::Lost { lost },
    };
    // Events not written, waiting to be recorded as a count.
    let mut unwritten = 0;
    let record_unwritten = |writer: &mut audit::Writer, unwritten: &mut u64| {
        if *unwritten > 0
            && writer
                .append(audit::Entry::Lost { lost: *unwritten })
                .is_ok()
        {
            tracing::warn!("audit log: writable again; {unwritten} events were not written");
            *unwritten = 0;
        }
    };
    loop {
        let first = tokio::select! {
            delivery = events.next() => delivery,
            _ = sync.tick() => {
                record_unwritten(&mut writer, &mut unwritten);
                if let Err(err) = writer.sync() {
                    tracing::error!("audit log: {err}");
                }
                continue;
            }
        };
        let Some(first) = first else {
            let _ = writer.sync();
            return;
        };
        let mut batch = vec![entry(first)];
        while batch.len() < BATCH {
            match events.try_next() {
                Some(delivery) => batch.push(entry(delivery)),
                None => break,
            }
        }
        let handled = batch.iter().rev().find_map(|e| match e {
            audit::Entry::Event(event) => Some(event.seq + 1),
            audit::Entry::Lost { .. } => None,
        });
        record_unwritten(&mut writer, &mut unwritten);
        if let Err(err) = writer.append_all(batch) {
            bus.count_lost(Stage::Audit, err.events);
            if unwritten == 0 {
                tracing::error!("audit log: {err}; events are being LOST (counted)");
            }
            unwritten += err.events;
        }
        // Only once handled: a follower replaying up to here reads them from the file.
        if let Some(handled) = handled {
            bus.mark_written(handled);
        }
    }
}
