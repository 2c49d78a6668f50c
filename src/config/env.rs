//! The environment layer of the configuration: a snapshot of the variables we read, the table
//! mapping each variable to its option, and the typo check on unknown `TURNPIKE_*` names.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::values::{
    parse_at_least_one, parse_bool, parse_cidr_list, parse_log_filter, parse_socket_addr, parse_workers,
};
use super::{CONFIG_FILE_ENV, Config, ConfigError};

const SECRET_KEY_ENV: &str = "TURNPIKE_SECRET_KEY";
const SECRET_KEY_FILE_ENV: &str = "TURNPIKE_SECRET_KEY_FILE";

/// One option settable from the environment.
pub(super) struct EnvOption {
    /// Dotted TOML key, used in error messages.
    pub(super) key: &'static str,
    /// Variables that set it, highest precedence first.
    pub(super) vars: &'static [&'static str],
    set: fn(&mut Config, &str) -> Result<(), String>,
}

/// Every option and its environment variables. `docs/configuration.md` documents each of them
/// (a test in `config.rs` checks).
pub(super) const OPTIONS: &[EnvOption] = &[
    EnvOption { key: "data_dir", vars: &["TURNPIKE_DATA_DIR"], set: |c, v| path(v).map(|dir| c.data_dir = dir) },
    EnvOption {
        key: "database.url",
        // The generic DATABASE_URL is honoured for convenience, but the specific name wins.
        vars: &["TURNPIKE_DATABASE_URL", "DATABASE_URL"],
        set: |c, v| v.parse().map(|url| c.database.url = Some(url)),
    },
    EnvOption {
        key: "database.max_connections",
        vars: &["TURNPIKE_DATABASE_MAX_CONNECTIONS"],
        set: |c, v| parse_at_least_one(v).map(|n| c.database.max_connections = n),
    },
    EnvOption {
        key: "gateway.listen",
        vars: &["TURNPIKE_GATEWAY_LISTEN"],
        set: |c, v| parse_socket_addr(v).map(|addr| c.gateway.listen = addr),
    },
    EnvOption {
        key: "gateway.status_listen",
        vars: &["TURNPIKE_GATEWAY_STATUS_LISTEN"],
        set: |c, v| parse_socket_addr(v).map(|addr| c.gateway.status_listen = addr),
    },
    EnvOption {
        key: "gateway.tls_listen",
        vars: &["TURNPIKE_GATEWAY_TLS_LISTEN"],
        set: |c, v| parse_socket_addr(v).map(|addr| c.gateway.tls_listen = Some(addr)),
    },
    EnvOption {
        key: "gateway.public_url",
        vars: &["TURNPIKE_GATEWAY_PUBLIC_URL"],
        set: |c, v| v.parse().map(|url| c.gateway.public_url = Some(url)),
    },
    EnvOption {
        key: "gateway.trusted_proxies",
        vars: &["TURNPIKE_GATEWAY_TRUSTED_PROXIES"],
        set: |c, v| parse_cidr_list(v).map(|cidrs| c.gateway.trusted_proxies = cidrs),
    },
    EnvOption {
        key: "gateway.max_header_bytes",
        vars: &["TURNPIKE_GATEWAY_MAX_HEADER_BYTES"],
        set: |c, v| parse_at_least_one(v).map(|n| c.gateway.max_header_bytes = n),
    },
    EnvOption {
        key: "gateway.max_headers",
        vars: &["TURNPIKE_GATEWAY_MAX_HEADERS"],
        set: |c, v| parse_at_least_one(v).map(|n| c.gateway.max_headers = n),
    },
    EnvOption {
        key: "gateway.max_uri_bytes",
        vars: &["TURNPIKE_GATEWAY_MAX_URI_BYTES"],
        set: |c, v| parse_at_least_one(v).map(|n| c.gateway.max_uri_bytes = n),
    },
    EnvOption {
        key: "gateway.header_read_timeout_secs",
        vars: &["TURNPIKE_GATEWAY_HEADER_READ_TIMEOUT_SECS"],
        set: |c, v| parse_at_least_one(v).map(|n| c.gateway.header_read_timeout_secs = n),
    },
    EnvOption {
        key: "gateway.idle_timeout_secs",
        vars: &["TURNPIKE_GATEWAY_IDLE_TIMEOUT_SECS"],
        set: |c, v| parse_at_least_one(v).map(|n| c.gateway.idle_timeout_secs = n),
    },
    EnvOption {
        key: "gateway.max_body_bytes",
        vars: &["TURNPIKE_GATEWAY_MAX_BODY_BYTES"],
        set: |c, v| parse_at_least_one(v).map(|n| c.gateway.max_body_bytes = std::num::NonZeroU64::new(n)),
    },
    EnvOption {
        key: "gateway.body_read_timeout_secs",
        vars: &["TURNPIKE_GATEWAY_BODY_READ_TIMEOUT_SECS"],
        set: |c, v| parse_at_least_one(v).map(|n| c.gateway.body_read_timeout_secs = n),
    },
    EnvOption {
        key: "gateway.send_timeout_secs",
        vars: &["TURNPIKE_GATEWAY_SEND_TIMEOUT_SECS"],
        set: |c, v| parse_at_least_one(v).map(|n| c.gateway.send_timeout_secs = n),
    },
    EnvOption {
        key: "gateway.workers",
        vars: &["TURNPIKE_GATEWAY_WORKERS"],
        set: |c, v| parse_workers(v).map(|n| c.gateway.workers = n),
    },
    EnvOption {
        key: "gateway.snapshot_file",
        vars: &["TURNPIKE_GATEWAY_SNAPSHOT_FILE"],
        set: |c, v| path(v).map(|file| c.gateway.snapshot_file = Some(file)),
    },
    EnvOption {
        key: "gateway.docs_origins",
        vars: &["TURNPIKE_GATEWAY_DOCS_ORIGINS"],
        set: |c, v| parse_origin_list(v).map(|origins| c.gateway.docs_origins = Some(origins)),
    },
    EnvOption {
        key: "upstreams.allow_private_targets",
        vars: &["TURNPIKE_UPSTREAMS_ALLOW_PRIVATE_TARGETS"],
        set: |c, v| parse_bool(v).map(|allow| c.upstreams.allow_private_targets = allow),
    },
    EnvOption {
        key: "upstreams.allow_loopback_targets",
        vars: &["TURNPIKE_UPSTREAMS_ALLOW_LOOPBACK_TARGETS"],
        set: |c, v| parse_bool(v).map(|allow| c.upstreams.allow_loopback_targets = allow),
    },
    EnvOption {
        key: "upstreams.private_target_allowlist",
        vars: &["TURNPIKE_UPSTREAMS_PRIVATE_TARGET_ALLOWLIST"],
        set: |c, v| parse_cidr_list(v).map(|cidrs| c.upstreams.private_target_allowlist = cidrs),
    },
    EnvOption {
        key: "admin.listen",
        vars: &["TURNPIKE_ADMIN_LISTEN"],
        set: |c, v| parse_socket_addr(v).map(|addr| c.admin.listen = addr),
    },
    EnvOption {
        key: "admin.max_body_bytes",
        vars: &["TURNPIKE_ADMIN_MAX_BODY_BYTES"],
        set: |c, v| parse_at_least_one(v).map(|n| c.admin.max_body_bytes = n),
    },
    EnvOption {
        key: "portal.listen",
        vars: &["TURNPIKE_PORTAL_LISTEN"],
        set: |c, v| parse_socket_addr(v).map(|addr| c.portal.listen = addr),
    },
    EnvOption {
        key: "portal.public_url",
        vars: &["TURNPIKE_PORTAL_PUBLIC_URL"],
        set: |c, v| v.parse().map(|url| c.portal.public_url = Some(url)),
    },
    EnvOption {
        key: "portal.smtp_url",
        vars: &["TURNPIKE_PORTAL_SMTP_URL"],
        set: |c, v| v.parse().map(|url| c.portal.smtp_url = Some(url)),
    },
    EnvOption {
        key: "portal.smtp_from",
        vars: &["TURNPIKE_PORTAL_SMTP_FROM"],
        set: |c, v| v.parse().map(|from| c.portal.smtp_from = from),
    },
    EnvOption { key: "secret.key", vars: &[SECRET_KEY_ENV], set: |c, v| v.parse().map(|key| c.secret.key = Some(key)) },
    EnvOption {
        key: "secret.key_file",
        vars: &[SECRET_KEY_FILE_ENV],
        set: |c, v| path(v).map(|file| c.secret.key_file = Some(file)),
    },
    EnvOption {
        key: "log.level",
        vars: &["TURNPIKE_LOG_LEVEL"],
        set: |c, v| parse_log_filter(v).map(|filter| c.log.level = filter),
    },
    EnvOption {
        key: "log.format",
        vars: &["TURNPIKE_LOG_FORMAT"],
        set: |c, v| v.parse().map(|format| c.log.format = format),
    },
];

/// Comma-separated origins; `none` for none (an empty value counts as unset).
fn parse_origin_list(text: &str) -> Result<Vec<turnpike_gateway::Origin>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let origins = text.split(',').map(str::trim).filter(|o| !o.is_empty());
    origins.map(|o| o.parse().map_err(|e: turnpike_gateway::InvalidOrigin| e.to_string())).collect()
}

/// Any non-empty text is a path; empty values never get here (see [`Env::get`]).
fn path(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text))
}

/// Overrides `config` with every option set in `env`.
pub(super) fn apply(config: &mut Config, env: &Env) -> Result<(), ConfigError> {
    env.reject_unknown()?;
    for option in OPTIONS {
        let Some((var, value)) = option.vars.iter().find_map(|var| env.get(var).map(|value| (*var, value))) else {
            continue;
        };
        (option.set)(config, value).map_err(|message| ConfigError::Env { option: option.key, var, message })?;
    }
    // The two secret options are one choice: one set in the environment replaces the other from
    // the file rather than conflicting with it.
    match (env.get(SECRET_KEY_ENV), env.get(SECRET_KEY_FILE_ENV)) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::SecretConflict { origin: "the environment".to_owned() });
        }
        (Some(_), None) => config.secret.key_file = None,
        (None, Some(_)) => config.secret.key = None,
        (None, None) => {}
    }
    Ok(())
}

/// A snapshot of the environment variables the configuration reads. Build it with
/// [`Env::from_process`] in `main`, or from pairs in tests.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// Captures the `TURNPIKE_*` variables and `DATABASE_URL` from the process environment.
    pub fn from_process() -> Result<Self, ConfigError> {
        let mut vars = BTreeMap::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|name| is_ours(name)) else {
                continue;
            };
            let value = value.into_string().map_err(|_| ConfigError::EnvNotUnicode { var: name.to_owned() })?;
            vars.insert(name.to_owned(), value);
        }
        Ok(Self { vars })
    }

    /// The value of `name`; an empty value counts as unset, as container tooling often passes
    /// `NAME=` for "not configured".
    fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|value| !value.is_empty())
    }

    fn reject_unknown(&self) -> Result<(), ConfigError> {
        let known = || OPTIONS.iter().flat_map(|option| option.vars.iter().copied()).chain([CONFIG_FILE_ENV]);
        let unknown =
            self.vars.keys().find(|name| name.starts_with("TURNPIKE_") && !known().any(|k| k == name.as_str()));
        match unknown {
            Some(var) => Err(ConfigError::UnknownEnv {
                var: var.clone(),
                suggestion: known()
                    .map(|k| (edit_distance(var, k), k))
                    .filter(|&(distance, _)| distance <= 3)
                    .min()
                    .map(|(_, k)| k),
            }),
            None => Ok(()),
        }
    }
}

/// Variables the configuration reads; everything else is left out of the snapshot.
fn is_ours(name: &str) -> bool {
    name.starts_with("TURNPIKE_") || name == "DATABASE_URL"
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let vars = pairs.into_iter().map(|(k, v)| (k.into(), v.into())).filter(|(k, _)| is_ours(k)).collect();
        Self { vars }
    }
}

impl fmt::Debug for Env {
    // Names only: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

/// Levenshtein distance, for "did you mean" hints on misspelt variables.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_process_keeps_only_configuration_variables() {
        // Reads the real environment but never changes it.
        let env = Env::from_process().unwrap();
        assert!(env.vars.keys().all(|name| is_ours(name)));
    }

    #[test]
    fn pairs_are_filtered_and_empty_values_are_unset() {
        let env: Env = [("PATH", "/bin"), ("TURNPIKEX", "1"), ("TURNPIKE_LOG_LEVEL", "")].into_iter().collect();
        assert_eq!(env.vars.keys().collect::<Vec<_>>(), ["TURNPIKE_LOG_LEVEL"]);
        assert_eq!(env.get("TURNPIKE_LOG_LEVEL"), None);
        env.reject_unknown().unwrap();
    }

    #[test]
    fn debug_shows_names_only() {
        let env: Env = [("TURNPIKE_SECRET_KEY", "s3cr3t")].into_iter().collect();
        assert_eq!(format!("{env:?}"), r#"{"TURNPIKE_SECRET_KEY"}"#);
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("TURNPIKE_GATWAY_LISTEN", "TURNPIKE_GATEWAY_LISTEN"), 1);
    }

    #[test]
    fn every_variable_belongs_to_one_option() {
        let mut vars: Vec<_> = OPTIONS.iter().flat_map(|o| o.vars.iter()).collect();
        let total = vars.len();
        vars.sort();
        vars.dedup();
        assert_eq!(vars.len(), total, "a variable is listed twice");
        assert!(!vars.contains(&&CONFIG_FILE_ENV));
    }
}
