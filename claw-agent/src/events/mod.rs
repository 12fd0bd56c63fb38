//! Events: what the kernel decided, as operators read it — decoding ring-buffer records,
//! numbering them on the bus, throttling and loss accounting (`ingest`), the hash-chained audit
//! log, and the cgroup watchers (OOM kills from the kernel log, pids.max).
//!
//! It may use `kernel` (the event maps handed over, the catalogue's names), `policy` (reasons)
//! and `defaults`; sinks that carry events further live in `export` and `control`.

pub mod audit;
pub mod bus;
pub mod decode;
pub mod event;
pub mod identities;
pub mod ingest;
pub mod kmsg;
pub mod landlock;
pub mod watch;
