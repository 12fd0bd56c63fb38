//! Any line on the control socket, either way, and any daemon configuration: parsed or refused,
//! never a panic.
#![no_main]

use claw_agent::{
    control::{
        client::ReplyView,
        peer,
        protocol::{Reply, Request},
        server,
    },
    export::config,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Request>(data);
    let _ = serde_json::from_slice::<Reply>(data);
    let text = String::from_utf8_lossy(data);
    let _ = serde_json::from_str::<ReplyView>(&text);
    if let Some(cgroup) = peer::cgroup_v2(&text) {
        let agents = ["claw/tools".to_owned(), "claw/tools/inner".to_owned()];
        let _ = server::agent_of(cgroup, &agents);
    }
    let _ = config::parse("fuzz.yaml", &text);
});
