//! The gateway's strict HTTP/1 request-head reader (`gateway/src/limits/head.rs`) must
//! never panic, must read a head the same way whole and in pieces, and every head it
//! accepts must keep its promises (one unambiguous framing, no bare CR/LF, no folding,
//! within the limits); `fuzz_head` checks all of that itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = turnpike_gateway::fuzz_head(data);
});
