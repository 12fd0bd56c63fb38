//! Any text as a policy: parsing and compiling end in a policy or a placed error, never a panic.
#![no_main]

use claw_agent::{compile, policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match policy::parse("fuzz.yaml", &text) {
        Ok(parsed) => {
            let _ = compile::compile(&parsed);
        }
        Err(err) => {
            assert!(err.to_string().starts_with("fuzz.yaml"), "unplaced: {err}");
        }
    }
});
