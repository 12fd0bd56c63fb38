//! Export: the sinks that carry events out of the daemon — the hash-chained audit log,
//! forwarders to syslog/SIEM (RFC 5424, CEF,
//! OCSF JSON; UDP, TCP, TLS, with a disk spool), the Prometheus metrics page, and the daemon
//! configuration file that names them.
//!
//! It may use `events` (the bus and its events), `control` (the owner's status, for metrics),
//! `policy` (YAML helpers) and `defaults`.

pub mod audit_log;
pub mod config;
pub mod forward;
pub mod metrics;
pub mod siem;
