//! Replays the seed corpora of the gateway's fuzz targets (`fuzz/corpus/http_head`,
//! `fuzz/corpus/jwt`) through the same entry points the targets call, so every known
//! hostile input stays handled: no panic, and the outcome each seed stands for.

use turnpike_gateway::fuzz_head;
use turnpike_gateway::jwt_fuzzing::Verifiers;
use turnpike_testkit::fuzz_seeds;

/// The secret and key the `jwt` fuzz target uses (`fuzz/fuzz_targets/jwt.rs`).
const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
const RSA_PUBLIC: &str = include_str!("data/jwt_rsa_a.pub.pem");

/// Seeds named `ok-*` are complete heads that must be accepted, `partial-*` ones
/// incomplete heads still within the limits; every other seed must be refused.
/// `fuzz_head` itself checks the invariants of what it accepts.
#[test]
fn http_head_corpus_is_read_as_named() {
    let seeds = fuzz_seeds("http_head");
    assert!(seeds.len() >= 40, "corpus went missing");
    for (name, bytes) in seeds {
        let outcome = fuzz_head(&bytes);
        eprintln!("{name}: {outcome:?}");
        if name.starts_with("ok-") {
            assert!(matches!(outcome, Ok(Some(len)) if len <= bytes.len()), "{name}: {outcome:?}");
        } else if name.starts_with("partial-") {
            assert!(matches!(outcome, Ok(None)), "{name}: {outcome:?}");
        } else {
            assert!(outcome.is_err(), "{name} was not refused: {outcome:?}");
        }
    }
}

/// Every seed is refused by both policies, however it reaches verification.
#[test]
fn jwt_corpus_is_refused() {
    let seeds = fuzz_seeds("jwt");
    assert!(seeds.len() >= 40, "corpus went missing");
    let verifiers = Verifiers::new(SECRET, RSA_PUBLIC);
    for (name, token) in seeds {
        let outcomes = verifiers.verify(&token);
        eprintln!("{name}: {outcomes:?}");
        assert!(outcomes.len() >= 2, "{name}: verified under both policies");
        assert!(outcomes.iter().all(Result::is_err), "{name} was accepted: {outcomes:?}");
    }
}

/// The verifiers do accept what they should, so the refusals above mean something.
#[test]
fn jwt_corpus_verifiers_accept_a_good_token() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use turnpike_gateway::jwt_fuzzing::{AUDIENCE, ISSUER};

    let verifiers = Verifiers::new(SECRET, RSA_PUBLIC);
    let exp = chrono::Utc::now().timestamp() + 600;
    let claims = serde_json::json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": exp});
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    let outcomes = verifiers.verify(format!("{message}.{signature}").as_bytes());
    // Accepted by the HS256 policy (directly and through the header), refused by RS256.
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 2, "{outcomes:?}");
    assert_eq!(outcomes.len(), 4);
}
