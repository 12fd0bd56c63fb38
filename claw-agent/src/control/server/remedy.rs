//! What the operator asks about denials: `allow` (a grant in the kernel), `advise` (rules drafted
//! from recent denials) and `persist` (the rule for one denial), drafts being edits of the
//! enforced policy file.

use tokio::io::AsyncWrite;

use super::{ask, logged::logged_event, send, shutting_down, Control, Handles, AUDIT_CATCH_UP};
use crate::{
    control::{
        advise,
        grant::Lifetime,
        protocol::{ErrorKind, Reply},
    },
    events::{
        audit::{self, ReplayFrom},
        event::Kind,
    },
};

pub(super) async fn allow(
    handles: &Handles,
    write: &mut (impl AsyncWrite + Unpin),
    event: u64,
    lifetime: Lifetime,
    call_only: bool,
) -> std::io::Result<()> {
    let reply = match ask(handles, |reply| Control::Allow {
        event,
        lifetime,
        call_only,
        reply,
    })
    .await
    {
        Some(Ok(message)) => Reply::Allowed { message },
        Some(Err(failure)) => failure.into(),
        None => shutting_down(),
    };
    send(write, &reply).await
}

pub(super) async fn advise(
    handles: &Handles,
    write: &mut (impl AsyncWrite + Unpin),
    since: String,
    agent: Option<String>,
    call: Option<String>,
) -> std::io::Result<()> {
    let time = match humantime::parse_rfc3339_weak(&since) {
        Ok(time) => time,
        Err(err) => {
            let message = format!("since `{since}`: {err} — give a time like 2026-11-22T10:00:00Z");
            return send(write, &Reply::error(ErrorKind::BadRequest, message)).await;
        }
    };
    let path = handles.audit_log.clone();
    let until = handles.bus.next_seq();
    handles.bus.until_written(until, AUDIT_CATCH_UP).await;
    let events =
        tokio::task::spawn_blocking(move || audit::replay(&path, &ReplayFrom::Since(time), until))
            .await
            .unwrap_or_default();
    let chosen = events.iter().filter(|e| {
        agent.as_ref().is_none_or(|a| *a == e.agent)
            && call.as_ref().is_none_or(|c| Some(c) == e.call.as_ref())
    });
    let reply = draft_reply(handles, advise::draft(chosen)).await;
    send(write, &reply).await
}

pub(super) async fn persist(
    handles: &Handles,
    write: &mut (impl AsyncWrite + Unpin),
    event: u64,
) -> std::io::Result<()> {
    let reply = match logged_event(handles, event).await {
        Some(denial) if denial.kind == Kind::Deny => {
            draft_reply(handles, advise::draft([&denial])).await
        }
        Some(other) => Reply::error(
            ErrorKind::BadRequest,
            format!(
                "event {event} is a `{}` event — only denials can be allowed",
                other.kind
            ),
        ),
        None => Reply::error(
            ErrorKind::NotFound,
            format!("no event {event} in the audit log (rotated away, or not yet written)"),
        ),
    };
    send(write, &reply).await
}

/// `draft` written into the enforced policy file's text.
async fn draft_reply(handles: &Handles, draft: advise::Draft) -> Reply {
    let Some((policy, _)) = ask(handles, Control::Rules).await else {
        return shutting_down();
    };
    let current = match tokio::fs::read_to_string(&policy).await {
        Ok(text) => text,
        Err(err) => {
            return Reply::error(
                ErrorKind::Failed,
                format!("reading the enforced policy {policy}: {err}"),
            )
        }
    };
    match advise::add_rules(&policy, &current, &draft.rules) {
        Ok(proposed) => Reply::Draft {
            policy,
            rules: draft.rules.into_iter().collect(),
            notes: draft.notes.into_iter().collect(),
            current,
            proposed,
        },
        Err(err) => Reply::error(ErrorKind::Refused, err.to_string()),
    }
}
