//! A DNS server standing in for the node's resolver in the VM (127.0.0.1:53, UDP): it answers
//! A queries from a table the cases change, and remembers every name it was asked.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, UdpSocket},
    sync::{Arc, Mutex},
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{rdata, RData, Record, RecordType},
};

#[derive(Default)]
struct State {
    /// Lower-case name without the final dot -> (address, TTL).
    records: HashMap<String, (Ipv4Addr, u32)>,
    asked: Vec<String>,
}

#[derive(Clone)]
pub struct Upstream {
    state: Arc<Mutex<State>>,
}

impl Upstream {
    /// Serves on `address` from a thread of its own, for the life of the process.
    pub fn start(address: &str) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind(address)?;
        let upstream = Self {
            state: Arc::default(),
        };
        let state = upstream.state.clone();
        std::thread::spawn(move || serve(&socket, &state));
        Ok(upstream)
    }

    pub fn set(&self, name: &str, address: Ipv4Addr, ttl: u32) {
        self.lock().records.insert(name.to_owned(), (address, ttl));
    }

    /// Whether `name` was asked since the server started.
    pub fn was_asked(&self, name: &str) -> bool {
        self.lock().asked.iter().any(|n| n == name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn serve(socket: &UdpSocket, state: &Mutex<State>) {
    let mut buffer = [0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buffer[..len]) else {
            continue;
        };
        let mut reply = Message::new(
            query.metadata.id,
            MessageType::Response,
            query.metadata.op_code,
        );
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.queries = query.queries.clone();
        if let Some(question) = query.queries.first() {
            let name = question
                .name()
                .to_ascii()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            state.asked.push(name.clone());
            match state.records.get(&name) {
                Some(&(address, ttl)) if question.query_type() == RecordType::A => {
                    reply.add_answer(Record::from_rdata(
                        question.name().clone(),
                        ttl,
                        RData::A(rdata::A(address)),
                    ));
                }
                Some(_) => {}
                None => reply.metadata.response_code = ResponseCode::NXDomain,
            }
        }
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, peer);
        }
    }
}
