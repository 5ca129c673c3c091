//! `TRUSTED_PROXIES` CIDRs and `X-Forwarded-For` chains: the parser of each, and
//! the client address they give, on arbitrary text.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use meetup_gateway::edge::forwarded::{Cidr, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `proxies \n header lines...`
    let (proxies, headers) = text.split_once('\n').unwrap_or((text, ""));
    let networks: Vec<Cidr> = proxies
        .split(',')
        .filter_map(|c| c.parse::<Cidr>().ok())
        .collect();
    for net in &networks {
        // Display and parse agree.
        assert_eq!(net.to_string().parse::<Cidr>().ok(), Some(*net), "{net}");
    }
    let trusted = TrustedProxies::new(networks);
    let peer = IpAddr::from([10, 0, 0, 1]);
    let client = trusted.client_addr(peer, headers.lines());
    // The answer is the peer or one of the addresses the chain names.
    assert!(
        client == peer || headers.contains(&client.to_string()) || headers.contains(':'),
        "{client} from {headers:?}"
    );
});
