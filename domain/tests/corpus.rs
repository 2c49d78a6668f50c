//! Replays the seed corpora of the fuzz targets (`fuzz/corpus/`) through the parsers
//! of untrusted input, so every known nasty input stays handled: each must come back
//! as a clean error (or a success), never a panic, a hang or unbounded memory.

use std::path::PathBuf;

use turnpike_domain::openapi;

fn corpus(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn openapi_corpus_is_refused_cleanly() {
    let seeds = corpus("openapi");
    assert!(seeds.len() >= 10, "corpus went missing");
    for (name, bytes) in seeds {
        let Ok(text) = std::str::from_utf8(&bytes) else { continue };
        let outcome = openapi::import(text);
        eprintln!("{name}: {:?}", outcome.as_ref().map(|d| d.routes.len()).map_err(|e| e.to_string()));
        let err = outcome.expect_err(&name);
        assert!(!err.message.is_empty(), "{name}: empty error message");
    }
}
