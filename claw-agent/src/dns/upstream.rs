//! The node's resolvers: read from resolv.conf, asked over UDP (TCP when the answer is
//! truncated), one query at a time, with a timeout.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use hickory_proto::op::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

/// How long the node's resolver has to answer one query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// The nameservers of a resolv.conf, port 53 each.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The node's resolvers (resolv.conf), each in turn, over UDP; over TCP when the answer was
/// truncated.
pub(super) async fn ask_upstream(resolv_conf: &Path, query: &[u8]) -> Option<Vec<u8>> {
    let conf = tokio::fs::read_to_string(resolv_conf)
        .await
        .unwrap_or_default();
    let mut servers = nameservers(&conf);
    if servers.is_empty() {
        servers.push(SocketAddr::from(([127, 0, 0, 1], 53)));
    }
    for server in servers {
        let asked = tokio::time::timeout(UPSTREAM_TIMEOUT, ask(server, query)).await;
        match asked {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(err)) => tracing::warn!(%server, "resolver: asking upstream: {err}"),
            Err(_) => tracing::warn!(%server, "resolver: upstream did not answer in time"),
        }
    }
    None
}

pub(super) async fn ask(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buffer = vec![0u8; 65535];
    let len = socket.recv(&mut buffer).await?;
    buffer.truncate(len);
    let truncated = Message::from_vec(&buffer).is_ok_and(|m| m.metadata.truncation);
    if !truncated {
        return Ok(buffer);
    }
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_u16(len).await?;
    stream.write_all(query).await?;
    let reply_len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(reply_len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}
