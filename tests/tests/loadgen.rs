//! The load generator's scenarios at small sizes against a real gateway (and the
//! services it embeds), and the gRPC load spread over two service replicas on a
//! real nats-server: each finishes and reports well-formed, plausible results.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use meetup_loadgen::{churn, grpc, idle, relay, soak, storm};
use meetup_tests::{GatewayProcess, NatsServer, ServiceProcess, listening_addrs};
use serde_json::Value;

async fn gateway() -> GatewayProcess {
    GatewayProcess::start(
        "loadgen-gw",
        &[
            ("EVENTS_PER_SEC", "10000".into()),
            ("EVENTS_BURST", "10000".into()),
        ],
    )
    .await
    .expect("gateway")
}

fn number(result: &Value, key: &str) -> f64 {
    result[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {result}"))
}

fn assert_latency(summary: &Value, count: u64) {
    assert_eq!(summary["count"].as_u64(), Some(count), "{summary}");
    let p50 = summary["p50_ms"].as_f64().expect("p50");
    let p99 = summary["p99_ms"].as_f64().expect("p99");
    let max = summary["max_ms"].as_f64().expect("max");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{summary}");
}

#[tokio::test]
async fn relay_delivers_everything_in_order_and_measures_it() {
    let gw = gateway().await;
    let args = relay::RelayArgs {
        gateways: vec![gw.url()],
        pairs: 3,
        rate: 50.0,
        duration: 1.0,
        cross: false,
        payload_bytes: 100,
    };
    let result = relay::run(&args).await.expect("relay");
    assert_eq!(result["scenario"], "relay");
    let sent = result["sent"].as_u64().expect("sent");
    assert!(
        (120..=160).contains(&sent),
        "3 senders x 50/s x 1 s: {sent}"
    );
    assert_eq!(result["received"].as_u64(), Some(sent));
    assert_eq!(result["lost"].as_u64(), Some(0));
    assert_eq!(result["out_of_order"].as_u64(), Some(0));
    assert_latency(&result["latency"], sent);
    assert!((number(&result, "offered_per_s") - sent as f64).abs() < 1e-9);
}

#[tokio::test]
async fn echo_round_trips_are_measured() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    tokio::spawn(relay::echo_server(listener));
    let result = relay::run_echo(&url, 2, 50.0, 1.0, 100)
        .await
        .expect("echo");
    let sent = result["sent"].as_u64().expect("sent");
    assert!(sent >= 80, "{result}");
    assert_eq!(result["received"].as_u64(), Some(sent));
    assert_latency(&result["round_trip"], sent);
}

#[tokio::test]
async fn storm_converges_on_the_full_list() {
    let gw = gateway().await;
    let result = storm::run(&storm::StormArgs {
        gateways: vec![gw.url()],
        users: 20,
        timeout: 30.0,
        presence: "full".into(),
        sources: 1,
    })
    .await
    .expect("storm");
    assert_eq!(result["converged_clients"].as_u64(), Some(20), "{result}");
    assert_eq!(result["clients_on_a_stale_list"].as_u64(), Some(0));
    assert!(number(&result, "converge_s") > 0.0);
    assert!(
        result["users_list_messages"].as_u64().expect("messages") >= 20,
        "every client got a list"
    );
    assert!(result["users_list_bytes"].as_u64().expect("bytes") > 0);
}

#[tokio::test]
async fn a_delta_storm_converges_from_one_list_each_and_the_deltas() {
    let gw = gateway().await;
    let result = storm::run(&storm::StormArgs {
        gateways: vec![gw.url()],
        users: 20,
        timeout: 30.0,
        presence: "delta".into(),
        // From 127.0.0.1 and 127.0.0.2.
        sources: 2,
    })
    .await
    .expect("storm");
    assert_eq!(result["converged_clients"].as_u64(), Some(20), "{result}");
    assert_eq!(result["clients_on_a_stale_list"].as_u64(), Some(0));
    assert_eq!(
        result["users_list_messages"].as_u64(),
        Some(20),
        "one list per client: {result}"
    );
    assert!(number(&result, "presence_bytes") > number(&result, "users_list_bytes"));
}

#[tokio::test]
async fn idle_measures_memory_per_connection() {
    let gw = gateway().await;
    let args = idle::IdleArgs {
        gateways: vec![gw.url()],
        pids: vec![gw.process.pid()],
        users: 20,
        register: true,
        settle: 0.2,
        presence: "delta".into(),
        sources: 2,
        concurrency: 4,
        cpu_window: 0.5,
    };
    let result = idle::run(&args).await.expect("idle");
    assert_eq!(result["connections_open"].as_u64(), Some(20), "{result}");
    assert!(number(&result, "rss_after_kib") > 0.0);
    assert!(result["rss_per_connection_kib"].is_number());
    assert!(number(&result, "cpu_busy_at_idle") >= 0.0, "{result}");
}

#[tokio::test]
async fn call_churn_completes_calls_with_step_latencies() {
    let gw = gateway().await;
    let args = churn::ChurnArgs {
        gateways: vec![gw.url()],
        workers: 2,
        relays: 2,
        duration: 1.0,
        rate: 0.0,
    };
    let result = churn::run(&args).await.expect("churn");
    assert_eq!(result["errors"].as_u64(), Some(0), "{result}");
    let calls = result["calls_completed"].as_u64().expect("calls");
    assert!(calls > 0, "{result}");
    for step in ["start_call", "join_call", "leave_call"] {
        assert!(
            result[step]["count"].as_u64().expect("count") >= calls,
            "{step}: {result}"
        );
    }
    assert!(result["relay"]["count"].as_u64().expect("count") >= 2 * calls);
}

#[tokio::test]
async fn call_churn_at_a_fixed_rate_starts_that_many_calls() {
    let gw = gateway().await;
    let args = churn::ChurnArgs {
        gateways: vec![gw.url()],
        workers: 4,
        relays: 1,
        duration: 1.0,
        rate: 40.0,
    };
    let result = churn::run(&args).await.expect("churn");
    assert_eq!(result["errors"].as_u64(), Some(0), "{result}");
    // 40 a second for one second, each worker on its own schedule.
    assert_eq!(result["calls_completed"].as_u64(), Some(40), "{result}");
    assert_eq!(result["offered_calls_per_s"].as_f64(), Some(40.0));
}

/// Checks a gRPC load result of about `offered` RPCs: every call has an outcome,
/// most succeed, and each latency was recorded.
fn assert_grpc_result(result: &Value, service: &str, offered: u64) {
    let calls = result["calls"].as_u64().expect("calls");
    assert!(
        (offered * 95 / 100..=offered * 105 / 100).contains(&calls),
        "{service}: {result}"
    );
    let ok = result["outcomes"]["ok"].as_u64().unwrap_or(0);
    assert!(ok * 2 > calls, "{service}: most calls succeed: {result}");
    let outcomes: u64 = result["outcomes"]
        .as_object()
        .expect("outcomes")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(outcomes, calls, "every call has an outcome");
    assert_latency(&result["latency"], calls);
    let per_url: u64 = result["calls_per_url"]
        .as_array()
        .expect("calls_per_url")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(per_url, calls, "every call went to one of the addresses");
}

#[tokio::test]
async fn grpc_load_on_both_services() {
    let gw = gateway().await;
    let addrs = listening_addrs(&gw.process, &["presence", "calls"])
        .await
        .expect("service addresses");
    for (target, service) in [
        (grpc::Target::Presence, "presence"),
        (grpc::Target::Calls, "calls"),
    ] {
        let args = grpc::GrpcArgs {
            urls: vec![format!("http://{}", addrs[service])],
            rate: 400.0,
            duration: 1.0,
            connections: 2,
            list_every: 25,
            rpc_timeout_ms: 5000,
        };
        let result = grpc::run(target, &args).await.expect("grpc load");
        assert_grpc_result(&result, service, 400);
    }
}

#[tokio::test]
async fn grpc_load_spreads_over_two_replicas() {
    let nats = NatsServer::start().await.expect("nats-server");
    // No sweeps: the load generator's sessions name a gateway without a lease.
    let no_sweep = [("SWEEP_INTERVAL_MS", "0".to_owned())];
    for (target, service) in [
        (grpc::Target::Presence, "presence"),
        (grpc::Target::Calls, "calls"),
    ] {
        let mut replicas = Vec::new();
        for _ in 0..2 {
            replicas.push(
                ServiceProcess::start_env(service, Some(&nats.url()), &no_sweep)
                    .await
                    .expect("replica"),
            );
        }
        let urls: Vec<String> = replicas.iter().map(ServiceProcess::url).collect();
        let args = grpc::GrpcArgs {
            urls: urls.clone(),
            rate: 400.0,
            duration: 1.0,
            connections: 1,
            list_every: 0,
            rpc_timeout_ms: 5000,
        };
        let result = grpc::run(target, &args).await.expect("grpc load");
        assert_grpc_result(&result, service, 400);
        assert_eq!(result["urls"], serde_json::json!(urls), "{result}");
        let per_url: Vec<u64> = result["calls_per_url"]
            .as_array()
            .expect("calls_per_url")
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        let calls = result["calls"].as_u64().expect("calls");
        assert!(
            per_url.iter().all(|&n| n.abs_diff(calls / 2) <= 5),
            "{service}: spread evenly: {result}"
        );
    }
}

/// Checks a resume soak's results: every call alive, nothing lost silently.
fn assert_soak(result: &Value, calls: u64) {
    println!("{result}");
    assert_eq!(result["scenario"], "resume");
    let drops = result["drops"].as_u64().expect("drops");
    assert!(
        drops >= calls,
        "every user dropped about every second: {result}"
    );
    assert_eq!(result["resume_failures"].as_u64(), Some(0), "{result}");
    assert_eq!(result["resumed"].as_u64(), Some(drops), "{result}");
    assert_eq!(
        result["calls_alive_both_ways"].as_u64(),
        Some(calls),
        "{result}"
    );
    assert_eq!(result["relays_lost_silently"].as_u64(), Some(0), "{result}");
    assert_eq!(result["relays_duplicated"].as_u64(), Some(0), "{result}");
    let acked = result["relays_acked"].as_u64().expect("acked");
    let delivered = result["relays_delivered"].as_u64().expect("delivered");
    let reported = result["relays_missing_reported_not_recovered"]
        .as_u64()
        .expect("reported");
    assert!(acked > 0 && delivered + reported == acked, "{result}");
    assert_latency(&result["reconnect_to_resumed"], drops);
}

fn soak_args(gateways: Vec<String>, calls: usize) -> soak::SoakArgs {
    soak::SoakArgs {
        gateways,
        calls,
        duration: 4.0,
        drop_every: 1.0,
        away_for: 0.5,
        relay_rate: 10.0,
    }
}

#[tokio::test]
async fn a_resume_soak_keeps_every_call_on_one_gateway() {
    let gw = gateway().await;
    let result = soak::run(&soak_args(vec![gw.url(), gw.url()], 4))
        .await
        .expect("soak");
    assert_soak(&result, 4);
}

#[tokio::test]
async fn a_resume_soak_keeps_every_call_across_two_gateways() {
    let env = [
        ("EVENTS_PER_SEC", "10000".to_owned()),
        ("EVENTS_BURST", "10000".to_owned()),
    ];
    let cluster = meetup_tests::Cluster::start(2, &env)
        .await
        .expect("cluster");
    let result = soak::run(&soak_args(vec![cluster.url(0), cluster.url(1)], 4))
        .await
        .expect("soak");
    assert_soak(&result, 4);
}
