//! `status`, `rules` and `apply`: what is enforced, and making a policy file the enforced one.

use std::path::PathBuf;

use tokio::io::AsyncWrite;

use super::{ask, send, shutting_down, Control, Handles};
use crate::control::protocol::{ErrorKind, Reply};

pub(super) async fn status(
    handles: &Handles,
    write: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let reply = ask(handles, Control::Status)
        .await
        .map_or_else(shutting_down, Reply::Status);
    send(write, &reply).await
}

pub(super) async fn rules(
    handles: &Handles,
    write: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let reply = ask(handles, Control::Rules)
        .await
        .map_or_else(shutting_down, |(policy, lines)| Reply::Rules {
            policy,
            lines,
        });
    send(write, &reply).await
}

pub(super) async fn apply(
    handles: &Handles,
    write: &mut (impl AsyncWrite + Unpin),
    policy: String,
) -> std::io::Result<()> {
    let path = PathBuf::from(&policy);
    let reply = if !path.is_absolute() {
        Reply::error(
            ErrorKind::BadRequest,
            format!("policy path `{policy}` is relative — send an absolute path (clawctl does)"),
        )
    } else {
        match ask(handles, |reply| Control::Apply {
            policy: path,
            reply,
        })
        .await
        {
            Some(Ok((policy, generation))) => Reply::Applied { policy, generation },
            Some(Err(failure)) => failure.into(),
            None => shutting_down(),
        }
    };
    send(write, &reply).await
}
