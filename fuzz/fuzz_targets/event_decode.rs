//! Any bytes as a kernel record: decoded or refused, never a panic (the ring buffer is the
//! kernel's, but a decoder that trusts its input is a crash waiting for a kernel change).
#![no_main]

use std::time::Duration;

use claw_agent::{
    events::{
        decode,
        identities::{AgentIdentity, CallIdentity, Identities},
    },
    kernel::enforcer::Coverage,
    policy,
    policy::reason,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut identities = Identities::new();
    identities.insert(
        1,
        AgentIdentity {
            name: "tools".to_owned(),
            cgroup: "claw/tools".to_owned(),
            cgroup_id: 77,
        },
    );
    identities.call_started(
        78,
        CallIdentity {
            agent: "tools".to_owned(),
            call: "c1".to_owned(),
            cgroup: "claw/tools/call-c1".to_owned(),
        },
    );
    if let Ok(policy) = policy::parse(
        "fuzz.yaml",
        "agents:\n  - name: tools\n    cgroup: claw/tools\n    files: { read: [/usr/] }\n",
    ) {
        identities.set_summaries(policy.agents.iter().map(reason::Summary::of));
    }
    if let Ok(decoded) = decode::decode(data, &identities, Duration::from_secs(1), Coverage::Full) {
        let _ = serde_json::to_string(&decoded);
    }
});
