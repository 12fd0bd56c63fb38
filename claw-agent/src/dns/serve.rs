//! A resolver's UDP and TCP servers: each query judged; an allowed one asked upstream and its
//! answer's addresses opened in DNS_ALLOW; a refused one answered REFUSED and reported.

use std::sync::{Arc, RwLock};

use claw_common::Resolved;
use hickory_proto::op::{Message, ResponseCode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};

use super::{
    judge::{judge, openings, Verdict},
    upstream::ask_upstream,
    Client, Context,
};
use crate::events::event::{boot_time_ns, Decision, Event, Kind};

pub(super) async fn serve_udp(
    socket: Arc<UdpSocket>,
    client: Arc<RwLock<Client>>,
    context: Context,
) {
    let mut buffer = vec![0u8; 65535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(err) => {
                tracing::warn!("resolver: receiving: {err}");
                continue;
            }
        };
        let query = buffer[..len].to_vec();
        let (socket, client, context) = (socket.clone(), client.clone(), context.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&query, &client, &context).await {
                let _ = socket.send_to(&for_udp(&query, reply), peer).await;
            }
        });
    }
}

/// `reply` as a datagram answering `query`: one larger than the client can take (512 bytes, or
/// what its EDNS record says) goes as its header and question with TC set, so that the client
/// asks again over TCP rather than reading a cut-off answer.
pub fn for_udp(query: &[u8], reply: Vec<u8>) -> Vec<u8> {
    let Ok(asked) = Message::from_vec(query) else {
        return reply;
    };
    if reply.len() <= usize::from(asked.max_payload()) {
        return reply;
    }
    let Ok(mut cut) = Message::from_vec(&reply) else {
        return reply;
    };
    cut.answers.clear();
    cut.authorities.clear();
    cut.additionals.clear();
    cut.signature = None;
    cut.metadata.truncation = true;
    cut.to_vec().unwrap_or(reply)
}

pub(super) async fn serve_tcp(
    listener: TcpListener,
    client: Arc<RwLock<Client>>,
    context: Context,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_connection(
            stream,
            client.clone(),
            context.clone(),
        ));
    }
}

/// Queries over TCP: each framed by its length in two bytes (RFC 1035 4.2.2).
pub(super) async fn serve_tcp_connection(
    mut stream: TcpStream,
    client: Arc<RwLock<Client>>,
    context: Context,
) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = answer(&query, &client, &context).await else {
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(reply_len).await.is_err() || stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// The reply to one query: the node's resolver's answer, or REFUSED (reported). None for what
/// is not a DNS message.
pub(super) async fn answer(
    query: &[u8],
    client: &RwLock<Client>,
    context: &Context,
) -> Option<Vec<u8>> {
    let message = Message::from_vec(query).ok()?;
    let client = client.read().unwrap_or_else(|p| p.into_inner()).clone();
    let refuse = |code: ResponseCode| {
        let mut reply = Message::error_msg(message.metadata.id, message.metadata.op_code, code);
        reply.queries = message.queries.clone();
        reply.to_vec().ok()
    };
    let name = match judge(&message, &client.names) {
        Verdict::Forward(name) if client.cgroup_id != 0 => name,
        Verdict::Forward(name) => {
            tracing::warn!(
                agent = client.agent,
                name,
                "resolver: agent not installed yet"
            );
            return refuse(ResponseCode::ServFail);
        }
        Verdict::Refuse(name) => {
            report_refusal(&client, name, context);
            return refuse(ResponseCode::Refused);
        }
    };
    let Some(reply) = ask_upstream(&context.resolv_conf, query).await else {
        return refuse(ResponseCode::ServFail);
    };
    if let Ok(parsed) = Message::from_vec(&reply) {
        let entries = openings(
            &parsed,
            &name,
            &client.names,
            &client.guarded,
            client.cgroup_id,
            boot_time_ns(),
            context.max_ttl,
        );
        let mut allow = context.allow.lock().unwrap_or_else(|p| p.into_inner());
        for (key, value) in entries {
            // An earlier answer that lasts longer keeps its expiry.
            let value = match allow.get(&key, 0) {
                Ok(old) if old.expires_ns > value.expires_ns => Resolved {
                    expires_ns: old.expires_ns,
                    ..value
                },
                _ => value,
            };
            if let Err(err) = allow.insert(key, value, 0) {
                tracing::warn!(
                    agent = client.agent,
                    name,
                    "resolver: DNS_ALLOW full? {err}"
                );
            }
        }
    }
    Some(reply)
}

pub(super) fn report_refusal(client: &Client, name: Option<String>, context: &Context) {
    let mut event = Event::about(
        Kind::Deny,
        &client.agent,
        &client.cgroup,
        "dns",
        context.coverage,
    );
    event.decision = Decision::Deny;
    let allowed = client.names.list();
    event.reason = Some(match (&name, allowed.is_empty()) {
        (None, _) => format!("{} may send plain queries of one name only", client.agent),
        (Some(_), true) => format!(
            "{} may resolve no names: its connect rules name none",
            client.agent
        ),
        (Some(_), false) => format!(
            "{} may resolve only the names its connect rules name: {}",
            client.agent,
            allowed.join(", ")
        ),
    });
    event.name = name;
    context.bus.publish(event);
}
