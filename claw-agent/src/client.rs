//! The client side of the control socket, for clawctl.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
};

use anyhow::{bail, Context as _};

use crate::{
    describe::RuleLine,
    protocol::{Reply, Request, Status},
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

    /// The one reply to a request that has one.
    fn single(socket: &Path, request: &Request) -> anyhow::Result<Reply> {
        match Self::open(socket, request)?.next_reply()? {
            Some(Reply::Error { message }) => bail!("claw-agent: {message}"),
            Some(reply) => Ok(reply),
            None => bail!("claw-agent closed the connection without answering"),
        }
    }
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
