//! Any bytes as a kernel record: decoded or refused, never a panic (the ring buffer is the
//! kernel's, but a decoder that trusts its input is a crash waiting for a kernel change).
#![no_main]

use std::{collections::HashMap, time::Duration};

use claw_agent::event::{self, AgentIdentity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let identities = HashMap::from([(
        1,
        AgentIdentity {
            name: "tools".to_owned(),
            cgroup: "claw/tools".to_owned(),
            cgroup_id: 77,
        },
    )]);
    if let Ok(decoded) = event::decode(data, &identities, Duration::from_secs(1), "full") {
        let _ = serde_json::to_string(&decoded);
    }
});
