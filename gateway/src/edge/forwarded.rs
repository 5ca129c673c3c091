//! Which address a request really comes from, behind balancers: `TRUSTED_PROXIES`
//! (a list of CIDRs) and the `X-Forwarded-For` chain.
//!
//! Each proxy appends the address it received the request from, so the chain
//! reads `client, proxy1, proxy2` and the TCP peer is the last proxy. Only the
//! entries appended by our own proxies can be believed: everything to their left
//! was written by whoever sent the request, who can write anything there. So the
//! client is the rightmost address that is not one of ours, walking from the
//! right; a spoofed entry further left never counts.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// An IP network such as `10.0.0.0/8` or `fd00::/8`; a bare address is a network
/// of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or network (like 10.0.0.0/8 or fd00::/8)")]
    Syntax(String),
    #[error("{0:?}: the prefix length is longer than the address")]
    Prefix(String),
}

impl Cidr {
    /// True when `ip` lies inside this network. IPv4 addresses written as IPv6
    /// (`::ffff:10.1.2.3`, what a dual-stack socket reports) count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

/// True when the first `prefix` bits of `a` and `b` (left-aligned) agree.
fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    let mask = match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    };
    a & mask == b & mask
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let syntax = || CidrError::Syntax(s.to_owned());
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => {
                // Digits only: `u8::from_str` would also take "+8".
                if prefix.is_empty()
                    || prefix.len() > 3
                    || !prefix.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(syntax());
                }
                (addr, Some(prefix.parse::<u8>().map_err(|_| syntax())?))
            }
            None => (text, None),
        };
        let network = addr.parse::<IpAddr>().map_err(|_| syntax())?.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(CidrError::Prefix(s.to_owned()));
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The balancers in front of the gateway (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(networks: Vec<Cidr>) -> Self {
        TrustedProxies(networks)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// The client address of a request that reached us from `peer` with the
    /// `X-Forwarded-For` header values `forwarded_for` (in the order received).
    ///
    /// - With no trusted networks configured, the peer alone is trusted: the
    ///   client is the last entry, the one the peer appended.
    /// - Otherwise a peer outside the trusted networks did not come through our
    ///   balancer: its header is ignored and the peer is the client.
    /// - Walking the chain from the right, the first address outside the trusted
    ///   networks is the client; if every one is trusted, the leftmost is.
    /// - An entry that is not an address ends the walk at the last address
    ///   believed, since nothing left of it can be trusted.
    pub fn client_addr<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a str>,
    ) -> IpAddr {
        if !self.0.is_empty() && !self.contains(peer) {
            return peer;
        }
        let entries: Vec<&str> = forwarded_for
            .into_iter()
            .flat_map(|value| value.split(','))
            .collect();
        let mut believed = peer;
        for entry in entries.into_iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                return believed;
            };
            if !self.contains(ip) {
                return ip;
            }
            believed = ip;
        }
        believed
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`, which some proxies write).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|c| c.parse().expect("cidr")).collect())
    }

    #[test]
    fn cidrs_parse_and_match() {
        let table: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "2001:db8::1", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("::ffff:10.0.0.0/104", "10.1.2.3", false), // canonical v4 with a v6 prefix length
            ("fd00::/8", "fd12:3456::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "2001:db8::1", true),
            ("2001:db8::1/128", "2001:db8::1", true),
            ("2001:db8::1/127", "2001:db8::", true),
            ("2001:db8::1/128", "2001:db8::2", false),
            (" 10.1.0.0/16 ", "10.1.9.9", true),
        ];
        for (cidr, addr, inside) in table {
            match cidr.parse::<Cidr>() {
                Ok(net) => assert_eq!(net.contains(ip(addr)), *inside, "{cidr} contains {addr}"),
                // The v4-mapped network with /104 is longer than an IPv4 prefix.
                Err(error) => assert!(cidr.starts_with("::ffff:"), "{cidr}: {error}"),
            }
        }
    }

    #[test]
    fn bad_cidrs_are_refused() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "/8",
            "10.0.0/8",
            "fd00::/129",
            "10.0.0.0/8/8",
            "host.example",
            "10.0.0.0/0008",
            "1.2.3.4 /8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().map(|c| c.to_string()),
            Ok("10.1.2.3/8".to_owned())
        );
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let lb = proxies(&["10.0.0.0/8", "fd00::/8"]);
        let peer = ip("10.0.0.2");
        // (headers, expected client)
        let table: &[(&[&str], &str)] = &[
            (&["203.0.113.7"], "203.0.113.7"),
            // The client wrote its own entries first: they never count.
            (&["1.1.1.1, 203.0.113.7"], "203.0.113.7"),
            (&["1.1.1.1, 2.2.2.2, 203.0.113.7"], "203.0.113.7"),
            // Two hops of ours.
            (&["1.1.1.1, 203.0.113.7, 10.9.9.9"], "203.0.113.7"),
            // Several header lines are one list.
            (&["1.1.1.1", "203.0.113.7, 10.9.9.9"], "203.0.113.7"),
            // Everything trusted: the leftmost.
            (&["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
            // No header: the peer.
            (&[], "10.0.0.2"),
            (&[""], "10.0.0.2"),
            // Garbage stops the walk at the last believed hop.
            (&["1.1.1.1, not-an-ip, 10.9.9.9"], "10.9.9.9"),
            (&["203.0.113.7, garbage"], "10.0.0.2"),
            // Ports and IPv6.
            (&["198.51.100.1:4711"], "198.51.100.1"),
            (&["[2001:db8::5]:80, fd00::9"], "2001:db8::5"),
            (&["::ffff:198.51.100.1"], "198.51.100.1"),
        ];
        for (headers, client) in table {
            assert_eq!(
                lb.client_addr(peer, headers.iter().copied()),
                ip(client),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn a_peer_outside_the_trusted_networks_is_the_client() {
        let lb = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            lb.client_addr(ip("198.51.100.9"), ["203.0.113.7"]),
            ip("198.51.100.9")
        );
    }

    #[test]
    fn without_trusted_networks_the_peer_s_entry_is_the_client() {
        let only_peer = TrustedProxies::default();
        assert_eq!(
            only_peer.client_addr(ip("10.0.0.2"), ["1.1.1.1, 203.0.113.7"]),
            ip("203.0.113.7")
        );
        assert_eq!(only_peer.client_addr(ip("10.0.0.2"), []), ip("10.0.0.2"));
    }
}
