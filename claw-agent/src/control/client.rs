//! The client side of the control socket, for clawctl.

use std::{
    borrow::Cow,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{bail, Context as _};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    control::protocol::{Reply, Request, Status},
    policy::describe::RuleLine,
};

pub struct Connection {
    reader: BufReader<UnixStream>,
}

impl Connection {
    /// Connects and sends `request`.
    pub fn open(socket: &Path, request: &Request) -> anyhow::Result<Self> {
        let mut stream = UnixStream::connect(socket).with_context(|| {
            format!(
                "cannot reach claw-agent at {} — is it running? (start it with `claw-agent --policy FILE`, or pass --socket)",
                socket.display()
            )
        })?;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        stream.write_all(&line).context("sending the request")?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// The next reply; None when the daemon closed the connection.
    pub fn next_reply(&mut self) -> anyhow::Result<Option<Reply>> {
        let mut line = String::new();
        if self
            .reader
            .read_line(&mut line)
            .context("reading from claw-agent")?
            == 0
        {
            return Ok(None);
        }
        let reply = serde_json::from_str(&line)
            .with_context(|| format!("claw-agent sent an unreadable reply: {}", line.trim_end()))?;
        Ok(Some(reply))
    }

    /// The next reply line as it came; None when the daemon closed the connection.
    pub fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .context("reading from claw-agent")?;
        Ok((read > 0).then_some(line))
    }

    /// Whether more of the daemon's replies have arrived already (a follower flushes its output
    /// once it has printed all of them, not after each line).
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Sends one more request line on this connection.
    pub fn send(&mut self, request: &Request) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.reader
            .get_mut()
            .write_all(&line)
            .context("sending to claw-agent")
    }

    /// The one reply to a request that has one.
    fn single(socket: &Path, request: &Request) -> anyhow::Result<Reply> {
        match Self::open(socket, request)?.next_reply()? {
            Some(Reply::Error { message }) => bail!("claw-agent: {message}"),
            Some(reply) => Ok(reply),
            None => bail!("claw-agent closed the connection without answering"),
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

pub fn status(socket: &Path) -> anyhow::Result<Status> {
    match Connection::single(socket, &Request::Status {})? {
        Reply::Status(status) => Ok(status),
        other => bail!("unexpected reply from claw-agent: {other:?}"),
    }
}

pub fn rules(socket: &Path) -> anyhow::Result<(String, Vec<RuleLine>)> {
    match Connection::single(socket, &Request::Rules {})? {
        Reply::Rules { policy, lines } => Ok((policy, lines)),
        other => bail!("unexpected reply from claw-agent: {other:?}"),
    }
}

pub fn apply(socket: &Path, policy: &Path) -> anyhow::Result<(String, u64)> {
    let policy =
        std::path::absolute(policy).with_context(|| format!("resolving {}", policy.display()))?;
    let request = Request::Apply {
        policy: policy.display().to_string(),
    };
    match Connection::single(socket, &request)? {
        Reply::Applied { policy, generation } => Ok((policy, generation)),
        other => bail!("unexpected reply from claw-agent: {other:?}"),
    }
}
