//! OpenAPI import must turn any input into a document or a located error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = turnpike_domain::openapi::import(text);
    }
});
