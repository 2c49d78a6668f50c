//! Bearer-token verification (`gateway/src/jwt.rs`) under a fixed HS256 and a fixed
//! RS256 policy must never panic and never accept: without the secret or the private
//! key no input is a valid token.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use turnpike_gateway::jwt_fuzzing::Verifiers;

/// The secret and key the replay test (`gateway/tests/corpus.rs`) uses too.
const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
const RSA_PUBLIC: &str = include_str!("../../gateway/tests/data/jwt_rsa_a.pub.pem");

static VERIFIERS: LazyLock<Verifiers> = LazyLock::new(|| Verifiers::new(SECRET, RSA_PUBLIC));

fuzz_target!(|data: &[u8]| {
    for outcome in VERIFIERS.verify(data) {
        assert!(outcome.is_err(), "accepted {:?}", String::from_utf8_lossy(data));
    }
});
