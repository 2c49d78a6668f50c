//! A declarative configuration file must parse into a document or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = yaml_serde::from_str::<turnpike_store::declarative::Document>(text);
    }
});
