//! claw-agent: the node daemon that turns a policy into kernel enforcement and streams the
//! kernel's decisions to operators; and the pieces `clawctl` shares with it.
//!
//! Data flows one way: policy -> compile -> enforcer (maps, programs); kernel ring buffer ->
//! event -> server -> clients. `daemon` wires them together; adapters to the outside (cgroupfs,
//! BTF, the socket) stay at the edges.

pub mod advise;
pub mod audit;
pub mod baseline;
pub mod btf;
pub mod bus;
pub mod call;
pub mod cgroupfs;
pub mod client;
pub mod compile;
pub mod config;
pub mod daemon;
pub mod describe;
pub mod devices;
pub mod dns;
pub mod enforcer;
pub mod event;
pub mod forward;
pub mod grant;
pub mod ingest;
pub mod kmsg;
pub mod limits;
pub mod metrics;
pub mod peer;
pub mod pins;
pub mod policy;
pub mod protocol;
pub mod reason;
pub mod resolve;
pub mod rules;
pub mod server;
pub mod siem;
pub mod spawn;
pub mod supervise;
pub mod tracefs;
pub mod watch;
