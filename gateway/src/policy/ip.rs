//! Client IP allow and deny lists, compiled once per snapshot into bit masks.
//! Deny wins; a configured allow list refuses every address it does not contain.
//! Addresses are compared in canonical form, so an IPv4 client reaching a dual-stack
//! listener as `::ffff:a.b.c.d` matches IPv4 rules (and IPv4-mapped rules match IPv4).

use std::net::IpAddr;

use turnpike_domain::policy::{IpRules as IpRulesSpec, parse_cidr};

/// One CIDR block as a network and mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Block {
    /// Parses `addr` or `addr/len`. Host bits are ignored (`10.1.2.3/8` is `10.0.0.0/8`);
    /// an IPv4-mapped IPv6 block of at least /96 becomes the IPv4 block it maps.
    fn parse(text: &str) -> Option<Block> {
        let (addr, len) = parse_cidr(text.trim())?;
        Some(match addr {
            IpAddr::V4(a) => Block::v4(u32::from(a), len),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) if len >= 96 => Block::v4(u32::from(v4), len - 96),
                _ => {
                    let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
                    Block::V6 { net: u128::from(a) & mask, mask }
                }
            },
        })
    }

    fn v4(addr: u32, len: u8) -> Block {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        Block::V4 { net: addr & mask, mask }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (Block::V4 { net, mask }, IpAddr::V4(a)) => u32::from(a) & mask == net,
            (Block::V6 { net, mask }, IpAddr::V6(a)) => u128::from(a) & mask == net,
            _ => false,
        }
    }
}

/// A version's compiled IP rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRules {
    allow: Vec<Block>,
    deny: Vec<Block>,
    /// Whether the allow list was configured at all. Kept apart from `allow` so that
    /// an allow list whose every entry was unusable refuses everyone (fails closed)
    /// instead of turning into "no allow list".
    allow_listed: bool,
}

impl IpRules {
    /// Compiles the rules; `None` when there are none. Unusable entries (the control
    /// plane validates, so only a hand-made snapshot has them) are logged and skipped.
    pub fn compile(spec: &IpRulesSpec, version_id: &str) -> Option<IpRules> {
        if spec.allow.is_empty() && spec.deny.is_empty() {
            return None;
        }
        let parse = |list: &'static str, entries: &[String]| -> Vec<Block> {
            entries
                .iter()
                .filter_map(|text| {
                    let block = Block::parse(text);
                    if block.is_none() {
                        tracing::warn!(version = version_id, list, entry = %text, "left out an unusable IP rule");
                    }
                    block
                })
                .collect()
        };
        let allow = parse("allow", &spec.allow);
        let deny = parse("deny", &spec.deny);
        Some(IpRules { allow, deny, allow_listed: !spec.allow.is_empty() })
    }

    /// Whether `client` may call the version.
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        if self.deny.iter().any(|b| b.contains(client)) {
            return false;
        }
        !self.allow_listed || self.allow.iter().any(|b| b.contains(client))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        let spec = IpRulesSpec {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        IpRules::compile(&spec, "v").unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn no_lists_compile_to_no_rules() {
        assert_eq!(IpRules::compile(&IpRulesSpec::default(), "v"), None);
    }

    #[test]
    fn deny_wins_over_allow() {
        let r = rules(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert!(r.allows(ip("10.2.3.4")));
        assert!(!r.allows(ip("10.1.3.4")), "denied although inside the allow list");
        assert!(!r.allows(ip("192.0.2.1")), "outside a configured allow list");
    }

    #[test]
    fn a_deny_list_alone_allows_everyone_else() {
        let r = rules(&[], &["192.0.2.7", "2001:db8::/32"]);
        assert!(!r.allows(ip("192.0.2.7")));
        assert!(r.allows(ip("192.0.2.8")));
        assert!(!r.allows(ip("2001:db8:1::9")));
        assert!(r.allows(ip("2001:db9::1")));
    }

    #[test]
    fn prefix_boundaries_and_host_bits() {
        let r = rules(&["10.1.2.3/8", "0.0.0.0/0"], &["172.16.0.0/12"]);
        assert!(r.allows(ip("10.255.255.255")));
        assert!(!r.allows(ip("172.31.255.255")), "last address of the /12");
        assert!(r.allows(ip("172.32.0.0")), "first address after the /12");
        let only = rules(&["10.1.2.3/8"], &[]);
        assert!(only.allows(ip("10.9.9.9")), "host bits of the rule are ignored");
        assert!(!only.allows(ip("11.0.0.0")));
        assert!(!only.allows(ip("::1")), "IPv6 never matches an IPv4 block");
    }

    #[test]
    fn ipv4_mapped_addresses_are_normalized_both_ways() {
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert!(!rules(&[], &["127.0.0.1"]).allows(mapped), "mapped client against an IPv4 rule");
        assert!(!rules(&[], &["::ffff:127.0.0.0/104"]).allows(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(rules(&["::ffff:10.0.0.0/104"], &[]).allows(ip("10.3.2.1")));
        let v6 = rules(&["::1"], &[]);
        assert!(v6.allows(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(!v6.allows(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn an_allow_list_of_only_unusable_entries_refuses_everyone() {
        let r = rules(&["not-an-ip"], &["also/bad"]);
        assert!(!r.allows(ip("10.0.0.1")));
        let deny_only = rules(&[], &["bad"]);
        assert!(deny_only.allows(ip("10.0.0.1")));
    }
}
