//! The client side of the control socket, for clawctl.

use std::{
    borrow::Cow,
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    control::protocol::{ErrorKind, Reply, Request, Status},
    policy::{describe::RuleLine, landlock::Plan},
};

/// What went wrong talking to claw-agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach claw-agent at {socket} — is it running? (start it with `claw-agent --policy FILE`, or pass --socket)"
    )]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The socket is there but this user may not use it (its mode is the daemon's access
    /// control): a refusal, not an absent daemon.
    #[error(
        "not permitted to use claw-agent's socket at {socket} (run clawctl as root, or as a user the socket's mode admits; inside an agent, only its agent socket answers)"
    )]
    NotPermitted {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{doing}: {source}")]
    Io {
        doing: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("claw-agent sent an unreadable reply: {line}")]
    Unreadable {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Refused(#[from] ReplyError),
    #[error("claw-agent closed the connection without answering")]
    Closed,
    #[error("unexpected reply from claw-agent: {0}")]
    Unexpected(String),
}

/// An error reply: what claw-agent said, and what kind of failure it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("claw-agent: {message}")]
pub struct ReplyError {
    pub kind: ErrorKind,
    pub message: String,
}

fn io_error(doing: &'static str) -> impl FnOnce(io::Error) -> ClientError {
    move |source| ClientError::Io { doing, source }
}

pub struct Connection {
    reader: BufReader<UnixStream>,
}

impl Connection {
    /// Connects and sends `request`.
    pub fn open(socket: &Path, request: &Request) -> Result<Self, ClientError> {
        let mut stream = UnixStream::connect(socket).map_err(|source| {
            let socket = socket.to_owned();
            match source.kind() {
                io::ErrorKind::PermissionDenied => ClientError::NotPermitted { socket, source },
                _ => ClientError::Unreachable { socket, source },
            }
        })?;
        let mut line = serde_json::to_vec(request)
            .map_err(io::Error::other)
            .map_err(io_error("encoding the request"))?;
        line.push(b'\n');
        match stream.write_all(&line) {
            // A refusal (a client inside an agent) is sent and the connection closed before
            // the request is read: the reply waits in the socket.
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
            written => written.map_err(io_error("sending the request"))?,
        }
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// The next reply; None when the daemon closed the connection.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ClientError> {
        let mut line = String::new();
        if self
            .reader
            .read_line(&mut line)
            .map_err(io_error("reading from claw-agent"))?
            == 0
        {
            return Ok(None);
        }
        let reply = serde_json::from_str(&line).map_err(|source| ClientError::Unreadable {
            line: line.trim_end().to_owned(),
            source,
        })?;
        Ok(Some(reply))
    }

    /// The next reply line as it came; None when the daemon closed the connection.
    pub fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .map_err(io_error("reading from claw-agent"))?;
        Ok((read > 0).then_some(line))
    }

    /// Whether more of the daemon's replies have arrived already (a follower flushes its output
    /// once it has printed all of them, not after each line).
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Sends one more request line on this connection.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(request)
            .map_err(io::Error::other)
            .map_err(io_error("encoding the request"))?;
        line.push(b'\n');
        self.reader
            .get_mut()
            .write_all(&line)
            .map_err(io_error("sending to claw-agent"))
    }

    /// The one reply to a request that has one.
    fn single(socket: &Path, request: &Request) -> Result<Reply, ClientError> {
        match Self::open(socket, request)?.next_reply()? {
            Some(reply) => expect(reply),
            None => Err(ClientError::Closed),
        }
    }
}

/// A reply read without building its event: a follower filters on a few fields and, printing
/// JSON, prints the daemon's bytes as they came.
#[derive(Debug, Deserialize)]
pub struct ReplyView<'a> {
    #[serde(borrow)]
    pub reply: Cow<'a, str>,
    #[serde(borrow, default)]
    pub event: Option<&'a RawValue>,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The fields of an event a follower filters on.
#[derive(Debug, Deserialize)]
pub struct EventView<'a> {
    #[serde(default)]
    pub seq: u64,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub agent: Cow<'a, str>,
    #[serde(borrow)]
    pub op: Cow<'a, str>,
    #[serde(borrow, default)]
    pub call: Option<Cow<'a, str>>,
}

/// `reply`, unless it is an error reply: then the error, with its kind.
pub fn expect(reply: Reply) -> Result<Reply, ClientError> {
    match reply {
        Reply::Error { message, kind } => Err(ReplyError { kind, message }.into()),
        reply => Ok(reply),
    }
}

/// A reply that is neither the one asked for nor an error.
pub fn unexpected(reply: Option<Reply>) -> ClientError {
    match reply {
        Some(Reply::Error { message, kind }) => ReplyError { kind, message }.into(),
        Some(other) => ClientError::Unexpected(format!("{other:?}")),
        None => ClientError::Closed,
    }
}

pub fn status(socket: &Path) -> Result<Status, ClientError> {
    match Connection::single(socket, &Request::Status {})? {
        Reply::Status(status) => Ok(status),
        other => Err(unexpected(Some(other))),
    }
}

pub fn rules(socket: &Path) -> Result<(String, Vec<RuleLine>), ClientError> {
    match Connection::single(socket, &Request::Rules {})? {
        Reply::Rules { policy, lines } => Ok((policy, lines)),
        other => Err(unexpected(Some(other))),
    }
}

pub fn apply(socket: &Path, policy: &Path) -> Result<(String, u64), ClientError> {
    let policy = std::path::absolute(policy).map_err(io_error("resolving the policy's path"))?;
    let request = Request::Apply {
        policy: policy.display().to_string(),
    };
    match Connection::single(socket, &request)? {
        Reply::Applied { policy, generation } => Ok((policy, generation)),
        other => Err(unexpected(Some(other))),
    }
}

/// The Landlock layer a command started in `agent` must run under (None: none).
pub fn landlock(socket: &Path, agent: &str) -> Result<Option<Plan>, ClientError> {
    let request = Request::Landlock {
        agent: agent.to_owned(),
    };
    match Connection::single(socket, &request)? {
        Reply::Landlock { landlock } => Ok(landlock),
        other => Err(unexpected(Some(other))),
    }
}
