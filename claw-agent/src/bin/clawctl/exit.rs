//! clawctl's exit codes: what went wrong, by kind, so that scripts and orchestrators can tell a
//! refusal from a usage error from a daemon that is not there or not enforcing.

use std::process::ExitCode;

use claw_agent::control::{
    client::{ClientError, ReplyError},
    protocol::ErrorKind,
};

/// The exit codes, as `--help` shows them.
pub const CODES: &str = "\
Exit codes:
  0  done (for `run`: the command's own status)
  1  refused or failed: the daemon said no (a rejected policy, a refused grant, no such event),
     this user may not use the control socket, a policy file has errors, the audit log is
     broken
  2  usage: bad arguments, or a request claw-agent could not understand
  3  not enforcing, or claw-agent unreachable or shutting down";

/// `status` found the policy not (fully) enforced.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotEnforcing(pub String);

/// The command line asks for something impossible (what clap cannot check by itself).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The exit code for `err`.
pub fn code_of(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<NotEnforcing>() {
            return ExitCode::from(3);
        }
        if cause.is::<Usage>() {
            return ExitCode::from(2);
        }
        let reply = match cause.downcast_ref::<ClientError>() {
            Some(ClientError::Unreachable { .. }) => return ExitCode::from(3),
            Some(ClientError::Refused(reply)) => Some(reply),
            _ => cause.downcast_ref::<ReplyError>(),
        };
        if let Some(reply) = reply {
            return ExitCode::from(of_kind(reply.kind));
        }
    }
    ExitCode::FAILURE
}

fn of_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::BadRequest => 2,
        ErrorKind::Unavailable => 3,
        ErrorKind::NotFound | ErrorKind::Refused | ErrorKind::Forbidden | ErrorKind::Failed => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(kind: ErrorKind) -> anyhow::Error {
        let reply = ReplyError {
            kind,
            message: "no".to_owned(),
        };
        anyhow::Error::from(ClientError::from(reply)).context("clawctl")
    }

    #[test]
    fn each_kind_of_failure_has_its_documented_code() {
        assert_eq!(code_of(&refusal(ErrorKind::BadRequest)), ExitCode::from(2));
        assert_eq!(code_of(&refusal(ErrorKind::Refused)), ExitCode::from(1));
        assert_eq!(code_of(&refusal(ErrorKind::NotFound)), ExitCode::from(1));
        assert_eq!(code_of(&refusal(ErrorKind::Unavailable)), ExitCode::from(3));
        let unreachable = ClientError::Unreachable {
            socket: "/run/claw/claw.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(code_of(&unreachable.into()), ExitCode::from(3));
        let not_permitted = ClientError::NotPermitted {
            socket: "/run/claw/claw.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(code_of(&not_permitted.into()), ExitCode::FAILURE);
        let not_enforcing = NotEnforcing("not attached: lsm/file_open".to_owned());
        assert_eq!(code_of(&not_enforcing.into()), ExitCode::from(3));
        let usage = Usage("say how long the grant holds".to_owned());
        assert_eq!(code_of(&usage.into()), ExitCode::from(2));
        assert_eq!(
            code_of(&anyhow::anyhow!("a policy file has errors")),
            ExitCode::FAILURE
        );
    }
}
