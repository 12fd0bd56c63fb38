//! Any text as a policy: parsing and compiling end in a policy or a placed error, never a panic.
#![no_main]

use claw_agent::{policy, policy::compile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match policy::parse("fuzz.yaml", &text) {
        Ok(parsed) => {
            // This machine's guards would read /etc/passwd and the interfaces per input.
            let guards = compile::Guards {
                credentials: claw_agent::policy::rules::credential_paths(
                    "u:x:1000:1000::/home/u:/bin/sh\n",
                ),
                networks: claw_agent::policy::rules::guarded_networks(),
                socket_directories: vec![claw_agent::policy::rules::RulePath(
                    "/run/claw/".to_owned(),
                )],
                agent_socket: Some(claw_agent::policy::rules::RulePath(
                    "/run/claw/agent.sock".to_owned(),
                )),
            };
            let _ = compile::compile_guarding(&parsed, &guards);
        }
        Err(err) => {
            assert!(err.to_string().starts_with("fuzz.yaml"), "unplaced: {err}");
        }
    }
});
