//! claw-agent: the node daemon that turns a policy into kernel enforcement and streams the
//! kernel's decisions to operators; and the pieces `clawctl` shares with it.
//!
//! Folders by concern; imports point down only (`cargo xtask lint` checks it):
//!
//! ```text
//! bin (claw-agent, clawctl)
//!  └─ daemon                 wiring: the owner task, installs, tool calls
//!      ├─ export   control   forwarders and metrics | sockets, protocol, client
//!      ├─ events   dns   supervise
//!      └─ kernel             programs, maps, links, cgroups
//!          └─ policy         parse, compile (pure)
//!              └─ defaults   paths and names (a leaf)
//! ```

pub mod control;
pub mod daemon;
pub mod defaults;
pub mod dns;
pub mod events;
pub mod export;
pub mod kernel;
pub mod policy;
pub mod supervise;
