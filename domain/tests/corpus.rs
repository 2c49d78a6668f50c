//! Replays the seed corpora of the fuzz targets (`fuzz/corpus/`) through the parsers
//! of untrusted input, so every known nasty input stays handled: each must come back
//! as a clean error (or a success), never a panic, a hang or unbounded memory.

use turnpike_domain::openapi;
use turnpike_testkit::fuzz_seeds;

#[test]
fn openapi_corpus_is_refused_cleanly() {
    let seeds = fuzz_seeds("openapi");
    assert!(seeds.len() >= 10, "corpus went missing");
    for (name, bytes) in seeds {
        let Ok(text) = std::str::from_utf8(&bytes) else { continue };
        let outcome = openapi::import(text);
        eprintln!("{name}: {:?}", outcome.as_ref().map(|d| d.routes.len()).map_err(|e| e.to_string()));
        let err = outcome.expect_err(&name);
        assert!(!err.message.is_empty(), "{name}: empty error message");
    }
}
