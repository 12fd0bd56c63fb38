//! `follow`: every event from now on, after a replay from the audit log of those a resuming
//! follower missed (or those since a time).

use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use super::{send, Handles, AUDIT_CATCH_UP, FOLLOW_BATCH_BYTES};
use crate::{
    control::protocol::{ErrorKind, Reply},
    events::{
        audit::{self, ReplayFrom},
        bus::{Delivery, Stage},
    },
};

pub(super) async fn follow(
    handles: &Handles,
    write: &mut (impl AsyncWrite + Unpin),
    after: Option<u64>,
    since: Option<String>,
) -> std::io::Result<()> {
    let mut events = handles.bus.subscribe(Stage::Follower);
    send(write, &Reply::Subscribed).await?;
    let from = match (after, since) {
        (Some(seq), _) => Some(ReplayFrom::After(seq)),
        (None, Some(time)) => match humantime::parse_rfc3339_weak(&time) {
            Ok(time) => Some(ReplayFrom::Since(time)),
            Err(err) => {
                let message =
                    format!("since `{time}`: {err} — give a time like 2026-11-22T10:00:00Z");
                return send(write, &Reply::error(ErrorKind::BadRequest, message)).await;
            }
        },
        (None, None) => None,
    };
    if let Some(from) = from {
        for reply in replay(handles, from, events.first_seq()).await {
            send(write, &reply).await?;
        }
    }
    // What has arrived goes out with one write, not one per event, once the audit log holds it:
    // a follower that resumes after a restart then finds there whatever the connection lost.
    let mut lines = Vec::new();
    loop {
        let mut next = events.next().await;
        let mut last_seq = None;
        if next.is_none() {
            return Ok(());
        }
        while let Some(delivery) = next.take() {
            let reply = match delivery {
                Delivery::Event(event) => {
                    last_seq = Some(event.seq);
                    Reply::Event { event }
                }
                Delivery::Gap(count) => Reply::Lost { count },
            };
            serde_json::to_writer(&mut lines, &reply).map_err(std::io::Error::other)?;
            lines.push(b'\n');
            if lines.len() < FOLLOW_BATCH_BYTES {
                next = events.try_next();
            }
        }
        if let Some(seq) = last_seq {
            handles.bus.until_written(seq + 1, AUDIT_CATCH_UP).await;
        }
        write.write_all(&lines).await?;
        write.flush().await?;
        lines.clear();
    }
}

/// The logged events from `from` up to the live stream's first (`until`), with `lost` markers
/// where sequence numbers are missing (rotated away, or never written).
async fn replay(handles: &Handles, from: ReplayFrom, until: u64) -> Vec<Reply> {
    handles.bus.until_written(until, AUDIT_CATCH_UP).await;
    let path = handles.audit_log.clone();
    let start = from.clone();
    let events = tokio::task::spawn_blocking(move || audit::replay(&path, &start, until))
        .await
        .unwrap_or_default();
    let mut expected = match from {
        ReplayFrom::After(seq) => Some(seq + 1),
        ReplayFrom::Since(_) => events.first().map(|e| e.seq),
    };
    let mut replies = Vec::new();
    for event in events {
        if let Some(gap) = expected
            .map(|e| event.seq.saturating_sub(e))
            .filter(|&g| g > 0)
        {
            replies.push(Reply::Lost { count: gap });
        }
        expected = Some(event.seq + 1);
        replies.push(Reply::Event {
            event: Arc::new(event),
        });
    }
    if let Some(gap) = expected.map(|e| until.saturating_sub(e)).filter(|&g| g > 0) {
        replies.push(Reply::Lost { count: gap });
    }
    replies
}
