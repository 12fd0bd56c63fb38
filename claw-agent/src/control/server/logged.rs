//! `event`: one logged event by its number, from the audit log.

use std::sync::Arc;

use tokio::io::AsyncWrite;

use super::{send, Handles, AUDIT_CATCH_UP};
use crate::{
    control::protocol::{ErrorKind, Reply},
    events::{audit, event::Event},
};

pub(super) async fn event(
    handles: &Handles,
    write: &mut (impl AsyncWrite + Unpin),
    seq: u64,
) -> std::io::Result<()> {
    let reply = match logged_event(handles, seq).await {
        Some(event) => Reply::Event {
            event: Arc::new(event),
        },
        None => Reply::error(
            ErrorKind::NotFound,
            format!("no event {seq} in the audit log (rotated away, or not yet written)"),
        ),
    };
    send(write, &reply).await
}

/// The event numbered `seq`, from the audit log.
pub async fn logged_event(handles: &Handles, seq: u64) -> Option<Event> {
    handles
        .bus
        .until_written(seq.saturating_add(1), AUDIT_CATCH_UP)
        .await;
    audit::find(handles.audit_log.clone(), seq).await
}
