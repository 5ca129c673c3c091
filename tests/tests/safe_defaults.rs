//! Safe by default: the embedded gRPC APIs stay on loopback unless told otherwise,
//! an API open to the network without a token says so at start, and the compose
//! file's gateways trust the balancer in front of them (and only it).

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;

use meetup_gateway::edge::forwarded::Cidr;
use meetup_tests::{GatewayProcess, Process, START_TIMEOUT, bin_path, listening_addrs};
use serde_json::Value;

const OPEN_API_WARNING: &str = "non-loopback address without INTERNAL_API_TOKEN";

fn json_line(line: &str) -> Option<Value> {
    serde_json::from_str(line).ok()
}

/// The `service` field of a JSON log line that carries the open-API warning.
fn open_api_warning(line: &str) -> Option<String> {
    let json = json_line(line)?;
    (json.get("level")?.as_str()? == "WARN"
        && json["fields"]["message"]
            .as_str()?
            .contains(OPEN_API_WARNING))
    .then(|| json["fields"]["service"].as_str().map(str::to_owned))
    .flatten()
}

#[tokio::test]
async fn embedded_apis_listen_on_loopback_unless_given_an_address() {
    // No PRESENCE_LISTEN / CALLS_LISTEN: the defaults. Either the gateway starts
    // and says where the services listen, or a default port is taken and it says
    // which address it tried; both name the default address.
    let process = Process::spawn(
        "gateway-defaults",
        &bin_path("meetup-gateway").expect("binary"),
        &[],
        &[
            ("HOST", "127.0.0.1".to_owned()),
            ("PORT", "0".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ],
    )
    .expect("spawn");
    for service in ["presence", "calls"] {
        let var = if service == "presence" {
            "PRESENCE_LISTEN"
        } else {
            "CALLS_LISTEN"
        };
        let addr = process
            .wait_for_line(START_TIMEOUT, |line| {
                if let Some((_, rest)) = line.split_once(&format!("cannot listen on {var}=")) {
                    return rest.split(' ').next()?.trim_end_matches(':').parse().ok();
                }
                let json = json_line(line)?;
                (json["fields"]["message"] == "listening" && json["fields"]["service"] == service)
                    .then(|| json["fields"]["addr"].as_str()?.parse::<SocketAddr>().ok())
                    .flatten()
            })
            .await
            .expect("the address of the embedded service");
        assert!(
            addr.ip().is_loopback(),
            "{service} listens on {addr}\n{}",
            process.output()
        );
        if process.output().contains("cannot listen on") {
            return; // the gateway stopped at the first busy port
        }
    }
    // The warning would come before the gateway's own `listening` line.
    listening_addrs(&process, &["gateway"])
        .await
        .expect("the gateway starts");
    assert!(
        !process.output().contains(OPEN_API_WARNING),
        "{}",
        process.output()
    );
}

#[tokio::test]
async fn an_embedded_api_open_to_the_network_without_a_token_is_warned_about() {
    let open = GatewayProcess::start("gw-open", &[("PRESENCE_LISTEN", "0.0.0.0:0".to_owned())])
        .await
        .expect("gateway");
    let service = open
        .process
        .wait_for_line(START_TIMEOUT, open_api_warning)
        .await
        .expect("a warning");
    assert_eq!(service, "presence");

    // With a token, or on loopback (the harness's default), there is nothing to say.
    let guarded = GatewayProcess::start(
        "gw-guarded",
        &[
            ("PRESENCE_LISTEN", "0.0.0.0:0".to_owned()),
            ("INTERNAL_API_TOKEN", "t0ken".to_owned()),
        ],
    )
    .await
    .expect("gateway");
    let local = GatewayProcess::start("gw-local", &[])
        .await
        .expect("gateway");
    for gateway in [&guarded, &local] {
        assert!(
            !gateway.process.output().contains(OPEN_API_WARNING),
            "{}: {}",
            gateway.id,
            gateway.process.output()
        );
    }
}

#[tokio::test]
async fn a_standalone_service_open_to_the_network_without_a_token_is_warned_about() {
    for (service, bin, var) in [
        ("presence", "meetup-presence", "PRESENCE_LISTEN"),
        ("calls", "meetup-calls", "CALLS_LISTEN"),
    ] {
        let process = Process::spawn(
            service,
            &bin_path(bin).expect("binary"),
            &[],
            &[
                (var, "0.0.0.0:0".to_owned()),
                ("METRICS_LISTEN", "127.0.0.1:0".to_owned()),
                ("LOG_FORMAT", "json".to_owned()),
            ],
        )
        .expect("spawn");
        let warned = process
            .wait_for_line(START_TIMEOUT, open_api_warning)
            .await
            .expect("a warning");
        assert_eq!(warned, service);
        listening_addrs(&process, &[service]).await.expect("up");
    }
}

/// The environment of a compose service, merge keys (`<<: *anchor`) resolved.
fn compose() -> serde_yaml::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml");
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    doc.apply_merge().expect("merge keys");
    for (_, service) in doc["services"]
        .as_mapping_mut()
        .expect("services")
        .iter_mut()
    {
        service.apply_merge().expect("merge keys");
        if let Some(env) = service.get_mut("environment") {
            env.apply_merge().expect("merge keys");
        }
    }
    doc
}

#[test]
fn the_compose_gateways_trust_the_balancer_and_only_it() {
    let doc = compose();
    let services = doc["services"].as_mapping().expect("services");
    let lb_addr: std::net::IpAddr = doc["services"]["lb"]["networks"]["meetup"]["ipv4_address"]
        .as_str()
        .expect("the balancer has a fixed address")
        .parse()
        .expect("an IP address");
    let subnet: Cidr = doc["networks"]["meetup"]["ipam"]["config"][0]["subnet"]
        .as_str()
        .expect("the network has a subnet")
        .parse()
        .expect("a CIDR");
    assert!(subnet.contains(lb_addr), "the balancer is on the network");

    let mut gateways = Vec::new();
    for (name, service) in services {
        let name = name.as_str().expect("name");
        let command = serde_yaml::to_string(&service["command"]).expect("command");
        if !command.contains("meetup-gateway") {
            continue;
        }
        gateways.push(name.to_owned());
        let env = &service["environment"];
        assert_eq!(
            env["TRUST_FORWARDED_FOR"].as_str(),
            Some("true"),
            "{name}: TRUST_FORWARDED_FOR"
        );
        let trusted: Vec<Cidr> = env["TRUSTED_PROXIES"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: TRUSTED_PROXIES"))
            .split(',')
            .map(|c| c.parse().expect("a CIDR"))
            .collect();
        assert!(
            trusted.iter().any(|net| net.contains(lb_addr)),
            "{name}: TRUSTED_PROXIES must cover the balancer at {lb_addr}"
        );
        // Another container of the network (a dynamic address) is not trusted.
        let dynamic: std::net::IpAddr = "172.28.0.200".parse().expect("ip");
        assert!(
            subnet.contains(dynamic) && !trusted.iter().any(|net| net.contains(dynamic)),
            "{name}: only the balancer is trusted"
        );
    }
    assert_eq!(gateways.len(), 2, "two gateways: {gateways:?}");

    // The balancer sends them X-Forwarded-For, and balances exactly these gateways.
    let haproxy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/haproxy.cfg"
    ))
    .expect("haproxy.cfg");
    let directives: Vec<&str> = haproxy
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .collect();
    assert!(
        directives.contains(&"option forwardfor"),
        "option forwardfor"
    );
    for gateway in &gateways {
        assert!(
            directives
                .iter()
                .any(|d| d.starts_with(&format!("server {gateway} {gateway}:3001"))),
            "haproxy balances {gateway}"
        );
    }
}
