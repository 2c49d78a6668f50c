//! The account rules, with no I/O: the password policy, password hashing (argon2id
//! with OWASP's parameters), account-token lifetimes, sign-in throttling and the
//! `next` redirect sanitiser. Handlers call these; the tests at the bottom pin them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in characters; argon2 takes any length, this bounds the work.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// How long an email verification link works.
pub const VERIFY_TOKEN_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(24);
/// How long a password reset link works.
pub const RESET_TOKEN_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Failed sign-ins allowed per account and per client address within [`THROTTLE_WINDOW`].
pub const THROTTLE_LIMIT: usize = 5;
/// The sliding window failed sign-ins are counted in.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The bundled list of common passwords (see the file's header for its source).
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../common-passwords.txt").lines().filter(|l| !l.starts_with("# ") && !l.is_empty()).collect()
});

/// Why a password is refused. The messages are shown next to the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    #[error("Use at least {MIN_PASSWORD_CHARS} characters.")]
    TooShort,
    #[error("Use at most {MAX_PASSWORD_CHARS} characters.")]
    TooLong,
    #[error("This password is too common; choose one that is harder to guess (a few unrelated words work well).")]
    Common,
    #[error("Do not use your email address as your password.")]
    IsEmail,
}

/// Checks a new password for the account with `email`.
///
/// Besides length, it refuses a password that is in the common list, that is such a
/// password followed by at most six digits or symbols (`password2024!`), that
/// repeats one character, or that is the email address or its local part.
pub fn check_password(password: &str, email: &str) -> Result<(), PasswordProblem> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordProblem::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(PasswordProblem::TooLong);
    }
    let lower = password.to_lowercase();
    let email = email.trim().to_lowercase();
    let local_part = email.split('@').next().unwrap_or_default();
    if lower == email || lower == local_part {
        return Err(PasswordProblem::IsEmail);
    }
    let base = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    let suffix_chars = lower.len() - base.len();
    let common = COMMON_PASSWORDS.contains(lower.as_str())
        || (suffix_chars <= 6 && !base.is_empty() && COMMON_PASSWORDS.contains(base))
        || lower.chars().all(|c| lower.starts_with(c));
    if common {
        return Err(PasswordProblem::Common);
    }
    Ok(())
}

/// argon2id with OWASP's first recommended setting: 19 MiB of memory, two passes,
/// one lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a
/// fresh random salt. Takes tens of milliseconds: call it off the async threads.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password within the limits")
        .to_string()
}

/// Whether `password` matches the PHC string `stored`. The parameters are read from
/// the string, so hashes made with older settings keep verifying; a malformed string
/// never verifies.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else { return false };
    argon2().verify_password(password.as_bytes(), &parsed).is_ok()
}

/// A hash of a random password, verified against when the account is unknown or
/// has no password, so that such a sign-in takes as long as a real one.
pub static DECOY_HASH: LazyLock<String> = LazyLock::new(|| hash_password(&new_token()));

/// A new account token for a link: 32 random bytes, base64url. Only its keyed hash is stored.
pub fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(turnpike_domain::secrets::generate_secret())
}

/// The local path a `next` parameter may send the browser to, or `None` when it could
/// lead anywhere else: it must start with one `/`, and contain no `\` (browsers read it
/// as `/`), no control characters or whitespace (browsers drop tabs and newlines, so
/// `/\t/evil.com` would become `//evil.com`).
pub fn safe_next(next: &str) -> Option<&str> {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace())
        && next.len() <= 2048;
    local.then_some(next)
}

/// Counts failed sign-ins per key (an account or a client address) in a sliding
/// window, and says when a key has used up its allowance. Time is passed in, so the
/// rule is tested without waiting.
#[derive(Debug)]
pub struct FailureCounter {
    limit: usize,
    window: Duration,
    /// Most keys tracked at once; beyond it the key idle longest is forgotten.
    capacity: usize,
    failures: HashMap<String, VecDeque<Instant>>,
}

impl FailureCounter {
    pub fn new(limit: usize, window: Duration, capacity: usize) -> Self {
        FailureCounter { limit, window, capacity, failures: HashMap::new() }
    }

    fn prune(&mut self, key: &str, now: Instant) {
        if let Some(times) = self.failures.get_mut(key) {
            while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
                times.pop_front();
            }
            if times.is_empty() {
                self.failures.remove(key);
            }
        }
    }

    /// Whether `key` has had `limit` failures within the window before `now`.
    pub fn is_blocked(&mut self, key: &str, now: Instant) -> bool {
        self.prune(key, now);
        self.failures.get(key).is_some_and(|times| times.len() >= self.limit)
    }

    pub fn record_failure(&mut self, key: &str, now: Instant) {
        self.prune(key, now);
        if !self.failures.contains_key(key) && self.failures.len() >= self.capacity {
            self.make_room(now);
        }
        let times = self.failures.entry(key.to_owned()).or_default();
        times.push_back(now);
        // Only the newest `limit` matter for the decision.
        while times.len() > self.limit {
            times.pop_front();
        }
    }

    /// Forgets a key's failures (an account after a successful sign-in).
    pub fn clear(&mut self, key: &str) {
        self.failures.remove(key);
    }

    fn make_room(&mut self, now: Instant) {
        let window = self.window;
        self.failures.retain(|_, times| times.back().is_some_and(|t| now.saturating_duration_since(*t) < window));
        if self.failures.len() >= self.capacity {
            let idlest = self.failures.iter().min_by_key(|(_, times)| times.back().copied()).map(|(k, _)| k.clone());
            if let Some(key) = idlest {
                self.failures.remove(&key);
            }
        }
    }
}

/// The throttling key of an account.
pub fn account_key(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

/// The throttling key of a client address: IPv6 clients usually hold a whole /64, so
/// they are counted by it.
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        let email = "ada.lovelace@example.com";
        let cases: &[(&str, Result<(), PasswordProblem>)] = &[
            ("", Err(PasswordProblem::TooShort)),
            ("short-pass1", Err(PasswordProblem::TooShort)),
            // 11 characters of 2 bytes each: characters count, not bytes.
            ("ééééééééééé", Err(PasswordProblem::TooShort)),
            ("correct horse battery staple", Ok(())),
            ("twelve chars", Ok(())),
            (&"x1".repeat(64), Ok(())),
            (&"x1".repeat(64).chars().chain(['y']).collect::<String>(), Err(PasswordProblem::TooLong)),
            // In the list.
            ("qwertyuiop123", Err(PasswordProblem::Common)),
            ("1q2w3e4r5t6y", Err(PasswordProblem::Common)),
            ("QWERTY123456", Err(PasswordProblem::Common)),
            // A listed password plus a short suffix of digits or symbols.
            ("password2024!", Err(PasswordProblem::Common)),
            ("football1234", Err(PasswordProblem::Common)),
            // ... but a long random tail is a different password.
            ("dragon834792", Err(PasswordProblem::Common)),
            ("dragon8374920", Ok(())),
            ("dragon83749201x", Ok(())),
            ("aaaaaaaaaaaaaa", Err(PasswordProblem::Common)),
            ("ADA.LOVELACE@EXAMPLE.COM", Err(PasswordProblem::IsEmail)),
            ("ada.lovelace", Err(PasswordProblem::IsEmail)),
            ("Ada.Lovelace1", Ok(())),
        ];
        for (password, expected) in cases {
            assert_eq!(check_password(password, email), *expected, "{password:?}");
        }
        assert_eq!(check_password("grace.hopper.navy", "grace.hopper.navy@example.com"), Err(PasswordProblem::IsEmail));
    }

    #[test]
    fn the_common_list_is_loaded() {
        assert!(COMMON_PASSWORDS.len() > 19_000, "{}", COMMON_PASSWORDS.len());
        assert!(COMMON_PASSWORDS.contains("password"));
        assert!(!COMMON_PASSWORDS.iter().any(|p| p.starts_with("# ")));
    }

    #[test]
    fn argon2id_hashes_with_owasp_parameters_and_verifies() {
        let hash = hash_password("correct horse battery staple");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password("correct horse battery staple", &hash));
        assert!(!verify_password("correct horse battery stapl", &hash));
        assert!(!verify_password("", &hash));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash, hash_password("correct horse battery staple"));
        assert!(!verify_password("anything", "not a phc string"));
        assert!(!verify_password("anything", ""));
        assert!(!verify_password("correct horse battery staple", &DECOY_HASH));
    }

    #[test]
    fn hashes_from_other_argon2_settings_still_verify() {
        let params = Params::new(8 * 1024, 1, 1, None).unwrap();
        let weaker = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let hash = weaker.hash_password(b"an older password hash", &salt).unwrap().to_string();
        assert!(verify_password("an older password hash", &hash));
        assert!(!verify_password("an older password hash!", &hash));
    }

    #[test]
    fn tokens_are_random_and_url_safe() {
        let a = new_token();
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{a}");
        assert_ne!(a, new_token());
    }

    #[test]
    fn next_only_allows_local_paths() {
        for ok in ["/", "/ok?x=1", "/apps/123#keys", "/a/b/../c", "/%2F%2Fevil.com"] {
            assert_eq!(safe_next(ok), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "//evil.com",
            "///evil.com",
            "https://evil",
            "http://evil.com/",
            "/\\evil",
            "\\\\evil",
            "/\t/evil.com",
            "/\n/evil.com",
            "javascript:alert(1)",
            "evil.com",
            " /ok",
            "/ok bad",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(3000))), None);
    }

    #[test]
    fn failures_block_after_the_limit_within_the_window() {
        let mut counter = FailureCounter::new(5, Duration::from_secs(900), 100);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(!counter.is_blocked("k", t0 + Duration::from_secs(i)), "failure {i}");
            counter.record_failure("k", t0 + Duration::from_secs(i));
        }
        assert!(counter.is_blocked("k", t0 + Duration::from_secs(5)));
        assert!(!counter.is_blocked("other", t0 + Duration::from_secs(5)));
        // The first failure leaves the window 900 s after it happened: one more try.
        assert!(counter.is_blocked("k", t0 + Duration::from_secs(899)));
        assert!(!counter.is_blocked("k", t0 + Duration::from_secs(900)));
        // ... which, failing, blocks again: failures at 1, 2, 3, 4 and 900 s.
        counter.record_failure("k", t0 + Duration::from_secs(900));
        assert!(counter.is_blocked("k", t0 + Duration::from_secs(900)));
        counter.clear("k");
        assert!(!counter.is_blocked("k", t0 + Duration::from_secs(900)));
    }

    #[test]
    fn the_counter_stays_within_its_capacity() {
        let mut counter = FailureCounter::new(2, Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        for (i, key) in (0..).zip(["a", "b", "c"]) {
            counter.record_failure(key, at(10 * i));
            counter.record_failure(key, at(10 * i + 1));
        }
        counter.record_failure("a", at(30));
        // "d" pushes out the key idle longest ("b"), not "a", which just failed again.
        counter.record_failure("d", at(31));
        assert_eq!(counter.failures.len(), 3);
        assert!(counter.is_blocked("a", at(31)));
        assert!(!counter.is_blocked("b", at(31)));
        assert!(counter.is_blocked("c", at(31)));
        // Expired keys are dropped before anything live is.
        counter.record_failure("e", t0 + Duration::from_secs(120));
        assert_eq!(counter.failures.len(), 1);
    }

    #[test]
    fn addresses_are_counted_per_ipv4_address_and_ipv6_64() {
        assert_eq!(address_key("192.0.2.7".parse().unwrap()), "ip:192.0.2.7");
        assert_eq!(address_key("::ffff:192.0.2.7".parse().unwrap()), "ip:192.0.2.7");
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            address_key("2001:db8:1:2:bbbb::2".parse().unwrap())
        );
        assert_ne!(address_key("2001:db8:1:2::1".parse().unwrap()), address_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(account_key(" Ada@Example.com "), "account:ada@example.com");
    }
}
