//! Control: the daemon's two Unix sockets — the wire protocol, the server (one handler per
//! request), the client clawctl uses, peer identification — and what the operator asks about
//! a denial (`advise` drafts rules, `grant` makes a kernel grant from it).
//!
//! It may use `events`, `kernel` (status types), `policy` and `defaults`; the owner task it
//! talks to lives in `daemon`, behind the `Control` channel defined here.

pub mod advise;
pub mod client;
pub mod grant;
pub mod peer;
pub mod protocol;
pub mod server;
