//! Starts in any order: the services started before what they depend on (NATS,
//! PostgreSQL) listen at once, say they are not ready (gRPC health
//! NOT_SERVING) and keep trying, and serve within a few seconds of the
//! dependency coming up; the same when NATS goes away later and comes back
//! (gateways then answer `/readyz` 503). A SIGTERM while waiting stops them
//! cleanly.

// Tests fail loudly: a failed expectation is the test failing.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meetup_proto::presence::v1::GetUserRequest;
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_tests::cluster::free_ports;
use meetup_tests::postgres::PostgresServer;
use meetup_tests::sio::SioClient;
use meetup_tests::{
    NatsServer, Process, ServiceProcess, bin_path, http_get, listening_addrs, wait_grpc_health,
};
use serde_json::json;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// What the dependency's coming up may take to be seen, as a failure bound
/// (the backoff tops out at 1 s; the measured times are printed).
const READY_AFTER: Duration = Duration::from_secs(5);
/// How long a process is watched waiting, to see it stays up and unready.
const WAITING: Duration = Duration::from_millis(1500);

/// The health of the whole server at `url`, or `None` when it does not answer.
async fn health(url: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// Polls until `probe` holds, failing after `bound`; returns how long it took.
async fn within<F, Fut>(bound: Duration, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Watches for [`WAITING`]: the process stays up and `probe` keeps holding.
async fn stays<F, Fut>(process: &mut Process, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + WAITING;
    while Instant::now() < until {
        assert!(
            process.is_running(),
            "{what}: exited while waiting\n{}",
            process.output()
        );
        assert!(probe().await, "{what}: no longer so while waiting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readyz(addr: SocketAddr) -> Option<u16> {
    http_get(addr, "/readyz")
        .await
        .ok()
        .map(|(status, _)| status)
}

/// Presence and calls on `nats_url` (with `env`), listening but not waited for.
async fn services(nats_url: &str, env: &[(&str, String)]) -> (ServiceProcess, ServiceProcess) {
    let presence = ServiceProcess::spawn_env("presence", Some(nats_url), env)
        .await
        .expect("presence listens");
    let calls = ServiceProcess::spawn_env("calls", Some(nats_url), env)
        .await
        .expect("calls listens");
    (presence, calls)
}

/// A gateway of `presence` and `calls` on `nats_url` (with `env`), on a port
/// chosen here; returns once it answers `/healthz`.
async fn gateway(
    nats_url: &str,
    presence: &ServiceProcess,
    calls: &ServiceProcess,
    env: &[(&str, String)],
) -> (Process, SocketAddr) {
    let port = free_ports(1).unwrap()[0];
    let mut all = vec![
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", port.to_string()),
        ("NATS_URL", nats_url.to_owned()),
        ("PRESENCE_URL", presence.url()),
        ("CALLS_URL", calls.url()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    all.extend(env.iter().cloned());
    let process = Process::spawn("gateway", &bin_path("meetup-gateway").unwrap(), &[], &all)
        .expect("gateway spawns");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    within(READY_AFTER, "gateway answers /healthz", || async {
        matches!(http_get(addr, "/healthz").await, Ok((200, _)))
    })
    .await;
    (process, addr)
}

/// Each of them, waiting for `what`, stays up and says it is not ready.
async fn all_wait(services: [&mut ServiceProcess; 2], what: &str) {
    for service in services {
        let url = service.url();
        stays(
            &mut service.process,
            &format!("service waiting for {what}: NOT_SERVING"),
            || async { health(&url).await == Some(ServingStatus::NotServing) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_started_before_nats_serve_once_it_is_up_and_again_after_it_went() {
    let nats_port = free_ports(1).unwrap()[0];
    let nats_url = format!("nats://127.0.0.1:{nats_port}");
    let (mut presence, mut calls) = services(&nats_url, &[]).await;
    // Nothing to talk to: each says so, and stays.
    all_wait([&mut presence, &mut calls], "NATS").await;
    let refused = PresenceServiceClient::connect(presence.url())
        .await
        .unwrap()
        .get_user(GetUserRequest {
            user_id: "nobody".into(),
        })
        .await
        .expect_err("refused while starting");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let mentions_wait = |p: &Process| p.output().contains("waiting for a dependency");
    assert!(mentions_wait(&presence.process) && mentions_wait(&calls.process));

    // NATS comes: they serve soon after, and a gateway started then works.
    let mut nats = NatsServer::start_at(nats_port).await.expect("nats starts");
    let up = Instant::now();
    let services = wait_grpc_health(&presence.url(), "")
        .await
        .and(wait_grpc_health(&calls.url(), "").await);
    services.expect("services serve");
    let services_ready = up.elapsed();
    println!("after NATS came up: services serving in {services_ready:?}");
    assert!(
        services_ready < READY_AFTER,
        "services took {services_ready:?}"
    );
    let (mut gateway, gateway_addr) = gateway(&nats_url, &presence, &calls, &[]).await;
    within(READY_AFTER * 2, "gateway ready", || async {
        readyz(gateway_addr).await == Some(200)
    })
    .await;
    let client = SioClient::connect(&format!("http://{gateway_addr}"))
        .await
        .expect("connects");
    let ack = client
        .emit_ack(
            "user-joined",
            &json!({ "id": "early-bird", "username": "Early" }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");

    // NATS goes: not ready (still running); back: ready again.
    nats.stop().await.expect("nats stops");
    within(READY_AFTER, "services NOT_SERVING without NATS", || async {
        health(&presence.url()).await == Some(ServingStatus::NotServing)
            && health(&calls.url()).await == Some(ServingStatus::NotServing)
    })
    .await;
    within(READY_AFTER, "gateway not ready without NATS", || async {
        readyz(gateway_addr).await == Some(503)
    })
    .await;
    nats.start_again().await.expect("nats back");
    let back = Instant::now();
    wait_grpc_health(&presence.url(), "")
        .await
        .expect("presence serves again");
    wait_grpc_health(&calls.url(), "")
        .await
        .expect("calls serves again");
    within(READY_AFTER * 2, "gateway ready again", || async {
        readyz(gateway_addr).await == Some(200)
    })
    .await;
    println!(
        "after NATS came back: all ready again in {:?}",
        back.elapsed()
    );
    for process in [&mut presence.process, &mut calls.process, &mut gateway] {
        assert!(process.is_running(), "{} exited", process.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_waiting_for_nats_stops_cleanly_on_sigterm() {
    let nats_url = format!("nats://127.0.0.1:{}", free_ports(1).unwrap()[0]);
    let (mut presence, mut calls) = services(&nats_url, &[]).await;
    for process in [&mut presence.process, &mut calls.process] {
        process.signal("TERM").unwrap();
        let status = process
            .wait_exit(Duration::from_secs(5))
            .await
            .expect("exits on SIGTERM");
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            process.name,
            process.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_service_started_before_postgresql_serves_once_it_is_up() {
    let mut pg = PostgresServer::start().await.expect("postgres");
    let db_url = pg.url("meetup");
    pg.stop().await.expect("postgres stops");
    let env = [
        ("HISTORY_LISTEN", "127.0.0.1:0".to_owned()),
        ("METRICS_LISTEN", "127.0.0.1:0".to_owned()),
        ("HISTORY_DATABASE_URL", db_url),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let mut history = Process::spawn("history", &bin_path("meetup-history").unwrap(), &[], &env)
        .expect("history spawns");
    let addr = listening_addrs(&history, &["history"])
        .await
        .expect("history listens")["history"];
    let url = format!("http://{addr}");
    stays(
        &mut history,
        "history without PostgreSQL: NOT_SERVING",
        || async { health(&url).await == Some(ServingStatus::NotServing) },
    )
    .await;
    pg.start_again().await.expect("postgres back");
    let up = Instant::now();
    within(READY_AFTER, "history serving", || async {
        health(&url).await == Some(ServingStatus::Serving)
    })
    .await;
    println!(
        "history serving {:?} after PostgreSQL came up",
        up.elapsed()
    );
    history.signal("TERM").unwrap();
    let status = history
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits");
    assert!(status.success(), "{status}:\n{}", history.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_started_while_jetstream_has_no_leader_serve_once_it_has_one() {
    let mut cluster = meetup_tests::cluster::NatsCluster::start()
        .await
        .expect("nats cluster");
    // One node of three: NATS answers, JetStream has no leader.
    for node in &mut cluster.nodes[1..] {
        node.stop("KILL").await.expect("node stops");
    }
    let nats_url = cluster.nodes[0].url();
    let replicas = [("JETSTREAM_REPLICAS", "3".to_owned())];
    let (mut presence, mut calls) = services(&nats_url, &replicas).await;
    all_wait([&mut presence, &mut calls], "a JetStream leader").await;

    let (_, rest) = cluster.nodes.split_at_mut(1);
    let (one, two) = rest.split_at_mut(1);
    futures::future::try_join(one[0].start(), two[0].start())
        .await
        .expect("the other nodes start again");
    let back = Instant::now();
    // A leader election comes first: a looser bound than for NATS alone.
    within(READY_AFTER * 3, "services serving", || async {
        health(&presence.url()).await == Some(ServingStatus::Serving)
            && health(&calls.url()).await == Some(ServingStatus::Serving)
    })
    .await;
    println!(
        "JetStream quorum back: services serving in {:?}",
        back.elapsed()
    );
    let (_gateway, addr) = gateway(&nats_url, &presence, &calls, &replicas).await;
    within(READY_AFTER * 3, "gateway ready", || async {
        readyz(addr).await == Some(200)
    })
    .await;
    let client = SioClient::connect(&format!("http://{addr}"))
        .await
        .expect("connects");
    let ack = client
        .emit_ack(
            "user-joined",
            &json!({ "id": "after-election", "username": "A" }),
        )
        .await
        .expect("ack");
    assert_eq!(ack["ok"], true, "{ack}");
}
