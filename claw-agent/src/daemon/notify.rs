//! systemd's service protocol (sd_notify(3)) for `Type=notify`: READY=1 once the policy is
//! enforced and the sockets are open (the moment `clawctl status` first answers), a STATUS= line
//! saying what is enforced, RELOADING=1 and READY=1 around a SIGHUP re-apply (the unit reloads
//! with `clawctl policy apply`, which waits for the answer; SIGHUP is for others), WATCHDOG=1 while
//! the owner task answers (if the unit sets WatchdogSec=), STOPPING=1. Not under systemd (no
//! $NOTIFY_SOCKET) every call does nothing. The processes claw starts never see these variables:
//! their environment is the policy's, nothing inherited.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot};

use crate::control::{protocol::Status, server::Control};

/// Sends `states`; a failure is logged, never fatal: enforcement does not depend on systemd.
/// A STATUS= value is one line: a newline in it (a policy error's text) would start another
/// assignment.
fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::warn!("telling systemd ({states:?}): {err}");
    }
}

/// The policy is enforced and the sockets answer.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
}

fn one_line(text: &str) -> String {
    text.split(['\n', '\r']).collect::<Vec<_>>().join(" ")
}

/// A SIGHUP re-apply begins.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A SIGHUP re-apply ended, with `status` saying how.
pub fn reloaded(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: enforcement stays pinned"),
    ]);
}

/// The STATUS= line for `status`: what is enforced, over how many agents, at which generation.
pub fn status_line(status: &Status) -> String {
    format!(
        "enforcing {} ({} agents, coverage {}, generation {})",
        status.policy,
        status.agents.len(),
        status.coverage.as_str(),
        status.generation
    )
}

/// Pings systemd's watchdog at half its interval, each time after the owner task answered a
/// status request (a stuck owner means no ping, and systemd restarts claw-agent; enforcement is
/// pinned meanwhile). Returns at once if the unit sets no WatchdogSec=.
pub async fn watchdog(control: mpsc::Sender<Control>) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) {
        return;
    }
    // Half the interval systemd allows, and never zero (tokio refuses a zero period).
    let interval = Duration::from_micros(usec / 2).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval(interval);
    loop {
        ticks.tick().await;
        let (reply, answer) = oneshot::channel();
        if control.send(Control::Status(reply)).await.is_err() {
            return;
        }
        match tokio::time::timeout(interval, answer).await {
            Ok(Ok(status)) => {
                let line = one_line(&status_line(&status));
                send(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
            }
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!("the owner did not answer within {interval:?}: no watchdog ping")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_value_stays_one_line() {
        assert_eq!(
            one_line("rejected: policy.yaml:3:5: bad\nREADY=1\r\nx"),
            "rejected: policy.yaml:3:5: bad READY=1  x"
        );
    }
}
