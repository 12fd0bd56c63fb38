//! SIEM forwarders: each follows the bus, formats every event as a syslog record, appends it to
//! its on-disk spool, and sends the spool in order to its collector, keeping what the collector
//! has not taken while it is unreachable. The spool is bounded: beyond its size, records are
//! counted as lost (stage `forward`) and, once there is room again, a `lost` event says how many.
//!
//! Delivery: in order; once per record while claw-agent runs (a record leaves the spool only
//! after the collector's connection took it; a collector that closes its connection is noticed
//! before the next write). After a crash of claw-agent, records sent but not yet marked in the
//! spool's offset file are sent again: at least once. UDP gives no delivery guarantee at all.
//!
//! A thread per forwarder, with blocking sockets and files: the work is sequential by nature
//! (spool, then send, in order) and must not stall the async runtime on disk or network.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    net::{TcpStream, ToSocketAddrs as _, UdpSocket},
    os::{fd::AsRawFd as _, unix::net::UnixDatagram},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use rustls::{pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::{pem::PemObject as _, CertificateDer};
use serde_json::json;

use crate::{
    events::{
        bus::{Bus, Delivery, Stage},
        event::{Event, Kind},
    },
    export::{
        config::{Forward, Target, Transport},
        siem,
    },
};

/// CA bundle used for tls:// collectors when the configuration names none.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Records sent per write.
const BATCH_RECORDS: usize = 256;
/// How long a forwarder waits before trying an unreachable collector again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Connect timeout, so that a black-holed collector does not stall the spool's writer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a forwarder has done, for status and metrics.
#[derive(Debug, Default)]
pub struct ForwarderStats {
    pub sent: AtomicU64,
    pub spooled_records: AtomicU64,
    pub spooled_bytes: AtomicU64,
    pub overflowed: AtomicU64,
    pub connected: AtomicBool,
}

pub struct Forwarder {
    pub name: String,
    pub target: String,
    pub stats: Arc<ForwarderStats>,
}

/// Starts a forwarder: its spool is opened (and what it holds from before is sent first).
pub fn start(config: &Forward, bus: Arc<Bus>) -> anyhow::Result<Forwarder> {
    let spool = Spool::open(&config.spool_dir(), config.spool_max_mib << 20)?;
    let connector = Connector::new(config)?;
    let stats = Arc::new(ForwarderStats::default());
    stats
        .spooled_records
        .store(spool.pending_records(), Ordering::Relaxed);
    let (records, received) = mpsc::channel();
    let mut events = bus.subscribe(Stage::Forward);
    let name = config.name.0.clone();
    let format = config.format;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    tokio::spawn(async move {
        loop {
            let record = match events.next().await {
                Some(Delivery::Event(event)) => {
                    Feed::Record(siem::syslog_record(&event, format, &hostname, pid))
                }
                Some(Delivery::Gap(count)) => Feed::Lagged(count),
                None => return,
            };
            if records.send(record).is_err() {
                return;
            }
        }
    });
    let worker = Worker {
        name: name.clone(),
        spool,
        connector,
        stats: stats.clone(),
        bus,
        dropped: 0,
    };
    std::thread::Builder::new()
        .name(format!("forward-{name}"))
        .spawn(move || worker.run(received))?;
    Ok(Forwarder {
        name,
        target: config.address.to_string(),
        stats,
    })
}

enum Feed {
    Record(String),
    /// The feeder fell behind the bus by this many events.
    Lagged(u64),
}

struct Worker {
    name: String,
    spool: Spool,
    connector: Connector,
    stats: Arc<ForwarderStats>,
    bus: Arc<Bus>,
    /// Records not spooled (full) or lost by the feeder since the last `lost` event.
    dropped: u64,
}

impl Worker {
    fn run(mut self, received: mpsc::Receiver<Feed>) {
        let mut connection: Option<Connection> = None;
        let mut retry_at = Instant::now();
        loop {
            let wait = match (self.spool.pending_records() > 0, &connection) {
                (false, _) => Duration::from_secs(1),
                (true, Some(_)) => Duration::ZERO,
                (true, None) => retry_at.saturating_duration_since(Instant::now()),
            };
            match received.recv_timeout(wait) {
                Ok(first) => {
                    self.take(first);
                    for more in received.try_iter().take(4096) {
                        self.take(more);
                    }
                    if let Err(err) = self.spool.sync() {
                        tracing::error!(forwarder = %self.name, "spool: {err}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            self.report_dropped();
            if self.spool.pending_records() == 0 {
                continue;
            }
            if connection.is_none() && Instant::now() >= retry_at {
                match self.connector.connect() {
                    Ok(fresh) => {
                        tracing::info!(forwarder = %self.name, target = %self.connector.target, "collector connected");
                        connection = Some(fresh);
                    }
                    Err(err) => {
                        tracing::warn!(forwarder = %self.name, target = %self.connector.target, "collector unreachable, spooling: {err}");
                        retry_at = Instant::now() + RETRY_AFTER;
                    }
                }
            }
            if let Some(open) = &mut connection {
                if let Err(err) = self.send_pending(open) {
                    tracing::warn!(forwarder = %self.name, "collector connection lost, spooling: {err}");
                    connection = None;
                    retry_at = Instant::now() + RETRY_AFTER;
                }
            }
            self.stats
                .connected
                .store(connection.is_some(), Ordering::Relaxed);
        }
    }

    fn take(&mut self, feed: Feed) {
        match feed {
            Feed::Record(record) => match self.spool.append(record.as_bytes()) {
                Ok(true) => {}
                Ok(false) => {
                    self.dropped += 1;
                    self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
                    self.bus.count_lost(Stage::Forward, 1);
                }
                Err(err) => {
                    self.dropped += 1;
                    self.bus.count_lost(Stage::Forward, 1);
                    tracing::error!(forwarder = %self.name, "spool: {err}; a record is LOST");
                }
            },
            Feed::Lagged(count) => self.dropped += count,
        }
        self.publish_depth();
    }

    /// Once records fit again, says on the bus (so also to the collector) how many did not.
    fn report_dropped(&mut self) {
        if self.dropped == 0 || self.spool.is_full() {
            return;
        }
        let mut event = Event::about_no_agent(Kind::Lost, "forward");
        event.details = Some(json!({
            "lost": self.dropped,
            "stage": Stage::Forward.name(),
            "forwarder": self.name,
        }));
        tracing::warn!(forwarder = %self.name, lost = self.dropped, "records were not forwarded");
        self.dropped = 0;
        self.bus.publish(event);
    }

    fn send_pending(&mut self, connection: &mut Connection) -> io::Result<()> {
        while self.spool.pending_records() > 0 {
            connection.check_open()?;
            let batch = self.spool.peek(BATCH_RECORDS)?;
            for record in &batch.records {
                connection.send(record)?;
            }
            connection.flush()?;
            self.spool.commit(&batch)?;
            self.stats
                .sent
                .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
            self.publish_depth();
        }
        Ok(())
    }

    fn publish_depth(&self) {
        self.stats
            .spooled_records
            .store(self.spool.pending_records(), Ordering::Relaxed);
        self.stats
            .spooled_bytes
            .store(self.spool.pending_bytes(), Ordering::Relaxed);
    }
}

/// How to reach one collector.
struct Connector {
    target: Target,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl Connector {
    fn new(config: &Forward) -> anyhow::Result<Self> {
        let tls = match config.address.transport {
            Transport::Tls => {
                let ca = config
                    .ca
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(&ca).map_err(|err| {
                    anyhow::anyhow!(
                        "forwarder `{}`: reading CA certificates {}: {err}",
                        config.name.0,
                        ca.display()
                    )
                })? {
                    roots.add(cert.map_err(|err| {
                        anyhow::anyhow!("forwarder `{}`: {}: {err}", config.name.0, ca.display())
                    })?)?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let client = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = config
                    .server_name
                    .clone()
                    .unwrap_or_else(|| config.address.host.clone());
                let server_name = ServerName::try_from(name.clone()).map_err(|err| {
                    anyhow::anyhow!("forwarder `{}`: server name `{name}`: {err}", config.name.0)
                })?;
                Some((Arc::new(client), server_name))
            }
            _ => None,
        };
        Ok(Self {
            target: config.address.clone(),
            tls,
        })
    }

    fn connect(&self) -> io::Result<Connection> {
        if self.target.transport == Transport::Unix {
            let socket = UnixDatagram::unbound()?;
            socket.connect(&self.target.host)?;
            return Ok(Connection::Unix(socket));
        }
        let address = (self.target.host.as_str(), self.target.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("{} resolves to nothing", self.target.host)))?;
        match self.target.transport {
            Transport::Udp => {
                let bind = if address.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket = UdpSocket::bind(bind)?;
                socket.connect(address)?;
                Ok(Connection::Udp(socket))
            }
            Transport::Tcp => Ok(Connection::Tcp(TcpStream::connect_timeout(
                &address,
                CONNECT_TIMEOUT,
            )?)),
            Transport::Unix => unreachable!("connected above"),
            Transport::Tls => {
                let (config, name) = self.tls.clone().expect("TLS set up for tls://");
                let tcp = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
                tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
                tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
                let client = ClientConnection::new(config, name).map_err(io::Error::other)?;
                let mut stream = StreamOwned::new(client, tcp);
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock)?;
                }
                Ok(Connection::Tls(Box::new(stream)))
            }
        }
    }
}

enum Connection {
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Connection {
    /// A collector that closed its side (stopped, restarted) is noticed here, before a write
    /// that would go nowhere: collectors never send, so a readable socket at EOF means closed.
    fn check_open(&self) -> io::Result<()> {
        let fd = match self {
            Connection::Tcp(tcp) => tcp.as_raw_fd(),
            Connection::Tls(tls) => tls.sock.as_raw_fd(),
            Connection::Udp(_) | Connection::Unix(_) => return Ok(()),
        };
        let mut byte = 0u8;
        // SAFETY: recv(2) into one byte we own; MSG_PEEK leaves the data (a TLS session ticket,
        // say) in place.
        let read = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match read {
            0 => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the collector closed the connection",
            )),
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock {
                    Ok(())
                } else {
                    Err(err)
                }
            }
            _ => Ok(()),
        }
    }

    /// One record: octet-counted on streams (RFC 6587), one datagram on UDP.
    fn send(&mut self, record: &[u8]) -> io::Result<()> {
        let frame = |record: &[u8]| {
            let mut framed = format!("{} ", record.len()).into_bytes();
            framed.extend_from_slice(record);
            framed
        };
        match self {
            Connection::Tcp(tcp) => tcp.write_all(&frame(record)),
            Connection::Tls(tls) => tls.write_all(&frame(record)),
            Connection::Udp(udp) => udp.send(record).map(drop),
            Connection::Unix(unix) => unix.send(record).map(drop),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Connection::Tcp(tcp) => tcp.flush(),
            Connection::Tls(tls) => tls.flush(),
            Connection::Udp(_) | Connection::Unix(_) => Ok(()),
        }
    }
}

/// The on-disk queue: `records` holds length-prefixed (u32 LE) records, appended; `offset`
/// says how many of its bytes the collector has taken. When everything is taken, both go back
/// to zero.
struct Spool {
    dir: PathBuf,
    records: File,
    offset: u64,
    length: u64,
    pending_records: u64,
    max_bytes: u64,
}

struct Batch {
    records: Vec<Vec<u8>>,
    bytes: u64,
}

impl Spool {
    fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let records = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join("records"))?;
        let length = records.metadata()?.len();
        let offset = std::fs::read_to_string(dir.join("offset"))
            .ok()
            .and_then(|o| o.trim().parse().ok())
            .filter(|&o| o <= length)
            .unwrap_or(0);
        let mut spool = Self {
            dir: dir.to_path_buf(),
            records,
            offset,
            length,
            pending_records: 0,
            max_bytes,
        };
        spool.pending_records = spool.count_from(offset)?;
        Ok(spool)
    }

    fn count_from(&mut self, mut position: u64) -> io::Result<u64> {
        let mut count = 0;
        let mut reader = BufReader::new(&self.records);
        reader.seek(SeekFrom::Start(position))?;
        let mut length = [0u8; 4];
        while position + 4 <= self.length {
            reader.read_exact(&mut length)?;
            position += 4 + u64::from(u32::from_le_bytes(length));
            reader.seek_relative(i64::from(u32::from_le_bytes(length)))?;
            count += 1;
        }
        Ok(count)
    }

    fn pending_records(&self) -> u64 {
        self.pending_records
    }

    fn pending_bytes(&self) -> u64 {
        self.length - self.offset
    }

    fn is_full(&self) -> bool {
        self.pending_bytes() >= self.max_bytes
    }

    /// Appends a record; false (and nothing written) when the spool is full.
    fn append(&mut self, record: &[u8]) -> io::Result<bool> {
        let size = 4 + record.len() as u64;
        if self.pending_bytes() + size > self.max_bytes {
            return Ok(false);
        }
        let mut entry = (record.len() as u32).to_le_bytes().to_vec();
        entry.extend_from_slice(record);
        self.records.write_all(&entry)?;
        self.length += size;
        self.pending_records += 1;
        Ok(true)
    }

    fn sync(&self) -> io::Result<()> {
        self.records.sync_data()
    }

    /// Up to `max` records from the offset, oldest first.
    fn peek(&mut self, max: usize) -> io::Result<Batch> {
        let mut reader = BufReader::new(&self.records);
        reader.seek(SeekFrom::Start(self.offset))?;
        let mut batch = Batch {
            records: Vec::new(),
            bytes: 0,
        };
        let mut length = [0u8; 4];
        while batch.records.len() < max && self.offset + batch.bytes + 4 <= self.length {
            reader.read_exact(&mut length)?;
            let mut record = vec![0u8; u32::from_le_bytes(length) as usize];
            reader.read_exact(&mut record)?;
            batch.bytes += 4 + record.len() as u64;
            batch.records.push(record);
        }
        Ok(batch)
    }

    /// Marks `batch` as taken by the collector.
    fn commit(&mut self, batch: &Batch) -> io::Result<()> {
        self.offset += batch.bytes;
        self.pending_records -= batch.records.len() as u64;
        if self.offset == self.length {
            self.records.set_len(0)?;
            self.offset = 0;
            self.length = 0;
        }
        let temporary = self.dir.join("offset.new");
        std::fs::write(&temporary, self.offset.to_string())?;
        std::fs::rename(&temporary, self.dir.join("offset"))
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use rustls::{ServerConfig, ServerConnection};
    use rustls_pki_types::PrivateKeyDer;

    use super::*;
    use crate::{events::event::tests::sample, export::config};

    /// A TLS collector's configuration, presenting `certified`.
    fn collector_config(certified: &rcgen::CertifiedKey) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![certified.cert.der().clone()],
                    PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into()),
                )
                .unwrap(),
        )
    }

    /// Reads one octet-counted frame.
    fn frame(reader: &mut impl io::BufRead) -> String {
        let mut length = Vec::new();
        reader.read_until(b' ', &mut length).unwrap();
        let length: usize = String::from_utf8_lossy(&length).trim().parse().unwrap();
        let mut record = vec![0u8; length];
        reader.read_exact(&mut record).unwrap();
        String::from_utf8(record).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn tls_collectors_get_octet_counted_records_after_verifying_their_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, certified.cert.pem()).unwrap();
        let server_config = collector_config(&certified);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let collector = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let tls = StreamOwned::new(ServerConnection::new(server_config).unwrap(), tcp);
            let mut reader = io::BufReader::new(tls);
            (0..3).map(|_| frame(&mut reader)).collect::<Vec<String>>()
        });

        let settings = config::parse(
            "claw.yaml",
            &format!(
                "forward:\n  - name: tls\n    address: tls://127.0.0.1:{port}\n    server_name: localhost\n    ca: {}\n    spool: {}\n",
                ca.display(),
                dir.path().join("spool").display()
            ),
        )
        .unwrap();
        let bus = Arc::new(Bus::new(7));
        let forwarder = start(&settings.forward[0], bus.clone()).unwrap();
        for _ in 0..3 {
            bus.publish(sample("deny"));
        }
        let records = tokio::task::spawn_blocking(move || collector.join().unwrap())
            .await
            .unwrap();
        for (record, seq) in records.iter().zip(7..) {
            assert!(
                record.starts_with("<108>1 ")
                    && record.contains(&format!("[claw@32473 seq=\"{seq}\"]")),
                "{record}"
            );
            let (_, json) = record.split_once("] ").unwrap();
            let event: Event = serde_json::from_str(json).unwrap();
            assert_eq!(event.seq, seq);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while forwarder.stats.sent.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(forwarder.stats.sent.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_collector_with_an_untrusted_certificate_gets_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let collector = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, other.cert.pem()).unwrap();
        let server_config = collector_config(&collector);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                let mut tls =
                    StreamOwned::new(ServerConnection::new(server_config.clone()).unwrap(), tcp);
                let _ = tls.read(&mut [0u8; 64]);
            }
        });
        let settings = config::parse(
            "claw.yaml",
            &format!(
                "forward:\n  - name: tls\n    address: tls://localhost:{port}\n    ca: {}\n    spool: {}\n",
                ca.display(),
                dir.path().join("spool").display()
            ),
        )
        .unwrap();
        let bus = Arc::new(Bus::new(0));
        let forwarder = start(&settings.forward[0], bus.clone()).unwrap();
        bus.publish(sample("deny"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(forwarder.stats.sent.load(Ordering::Relaxed), 0);
        assert_eq!(forwarder.stats.spooled_records.load(Ordering::Relaxed), 1);
        assert!(!forwarder.stats.connected.load(Ordering::Relaxed));
    }

    #[test]
    fn the_spool_keeps_order_across_reopening_and_empties_when_taken() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for n in 0..5 {
            assert!(spool.append(format!("record {n}").as_bytes()).unwrap());
        }
        let batch = spool.peek(2).unwrap();
        assert_eq!(batch.records, [b"record 0".to_vec(), b"record 1".to_vec()]);
        spool.commit(&batch).unwrap();
        drop(spool);

        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.pending_records(), 3);
        let batch = spool.peek(10).unwrap();
        assert_eq!(
            batch.records,
            [
                b"record 2".to_vec(),
                b"record 3".to_vec(),
                b"record 4".to_vec()
            ]
        );
        spool.commit(&batch).unwrap();
        assert_eq!((spool.pending_records(), spool.pending_bytes()), (0, 0));
        assert_eq!(
            std::fs::metadata(dir.path().join("records")).unwrap().len(),
            0
        );
    }

    #[tokio::test]
    async fn spool_overflow_is_counted_and_reported_on_the_bus() {
        let dir = tempfile::tempdir().unwrap();
        let settings = config::parse(
            "claw.yaml",
            "forward:\n  - name: down\n    address: tcp://127.0.0.1:9\n",
        )
        .unwrap();
        let bus = Arc::new(Bus::new(0));
        let mut events = bus.subscribe(Stage::Forward);
        let mut worker = Worker {
            name: "down".to_owned(),
            spool: Spool::open(dir.path(), 600).unwrap(),
            connector: Connector::new(&settings.forward[0]).unwrap(),
            stats: Arc::new(ForwarderStats::default()),
            bus: bus.clone(),
            dropped: 0,
        };
        for _ in 0..5 {
            worker.take(Feed::Record("x".repeat(200)));
        }
        assert_eq!(worker.spool.pending_records(), 2);
        assert_eq!(worker.stats.overflowed.load(Ordering::Relaxed), 3);
        assert_eq!(bus.lost(Stage::Forward), 3);
        worker.report_dropped();
        let Some(Delivery::Event(lost)) = events.next().await else {
            panic!("a lost event")
        };
        assert_eq!(lost.kind, Kind::Lost);
        assert_eq!(lost.details.as_ref().unwrap()["lost"], 3);
        assert_eq!(lost.details.as_ref().unwrap()["stage"], "forward");
        assert_eq!(worker.dropped, 0);
    }

    #[test]
    fn a_unix_target_gets_one_datagram_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let syslog = UnixDatagram::bind(&path).unwrap();
        let settings = config::parse(
            "claw.yaml",
            &format!(
                "forward:\n  - name: journal\n    address: unix://{}\n",
                path.display()
            ),
        )
        .unwrap();
        assert_eq!(
            settings.forward[0].address.to_string(),
            format!("unix://{}", path.display())
        );
        let mut connection = Connector::new(&settings.forward[0])
            .unwrap()
            .connect()
            .unwrap();
        connection.check_open().unwrap();
        connection.send(b"<108>1 record one").unwrap();
        connection.send(b"<108>1 record two").unwrap();
        let mut buffer = [0u8; 64];
        let n = syslog.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"<108>1 record one");
        let n = syslog.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"<108>1 record two");
        let relative = config::parse(
            "claw.yaml",
            "forward:\n  - name: j\n    address: unix://dev/log\n",
        );
        assert!(relative.is_err());
    }

    #[test]
    fn a_full_spool_refuses_records_without_writing_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 30).unwrap();
        assert!(spool.append(b"0123456789").unwrap());
        assert!(spool.append(b"0123456789").unwrap());
        assert!(!spool.append(b"0123456789").unwrap());
        assert_eq!(spool.pending_bytes(), 28);
        assert_eq!(spool.pending_records(), 2);
    }
}
