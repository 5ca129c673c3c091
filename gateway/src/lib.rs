//! The MeetUp edge gateway: serves browsers over Socket.IO, turns their events into
//! gRPC calls on the presence, call and history services, and relays WebRTC
//! signaling over the bus to whichever gateway holds the target socket.
//!
//! A library: it is handed its backends ([`Backends`]: the services, the bus,
//! the state store, the relay log, each local or remote) by its composition
//! root, `meetup-server` (`gateway/server/`), which owns the `meetup-gateway`
//! binary and decides between the embedded mode and a cluster.
//!
//! Where to look: `socket` (a socket's connection, queue and task), `handlers`
//! (what each client event does), `protocol` (what browsers may send and are
//! sent, the acks and error codes, every event name once), `mirror`
//! (presence and calls as this gateway knows them, and relay routing),
//! `dispatch` (the store's watches and the relays, told to the sockets),
//! `cluster` (this gateway's lease and health), `edge` (HTTP, limits, auth,
//! TURN), `backends` (what the gateway is handed, and how it reaches a
//! service), `history` (call history for browsers, in `meetup-history`'s
//! model), `resume` (resume tokens, relays kept for away sessions), `state`
//! (the handle every task shares), `config`, `metrics`.

#![forbid(unsafe_code)]

pub mod backends;
pub mod cluster;
pub mod config;
pub mod dispatch;
pub mod edge;
pub mod handlers;
pub mod history;
pub mod metrics;
pub mod mirror;
pub mod protocol;
pub mod resume;
pub mod sessions;
pub mod socket;
pub mod state;
pub mod traces;

use std::future::Future;
use std::time::Duration;

use meetup_platform::store::keys;
use meetup_platform::subjects;
use meetup_proto::calls::v1::RemoveGatewayRequest;
use meetup_proto::presence::v1::UnregisterGatewayRequest;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use backends::{Backends, Transport, Transports};
pub use config::Config;

use crate::mirror::Mirror;
use crate::state::{Gateway, GatewayParts, Limits};

/// Runs the gateway on `backends` and `listener` until `shutdown` resolves, then
/// drains: closes every socket, removes this gateway's users from calls and
/// presence, and stops. The backends are the caller's to stop afterwards.
pub async fn run(
    config: Config,
    backends: Backends,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let gateway_id = config.gateway_id();
    let auth =
        edge::auth::Authenticator::from_settings(&config.auth()).map_err(anyhow::Error::msg)?;
    if auth.is_some() {
        tracing::info!("browsers must authenticate with a JWT");
    }
    backends.bus.warn_if_old_server();
    let (layer, io) = SocketIo::builder()
        .max_payload(config.max_message_bytes)
        .ws_max_message_size(config.max_message_bytes as usize)
        .ws_max_frame_size(config.max_message_bytes as usize)
        .max_buffer_size(config.socket_buffer)
        .ws_read_buffer_size(config.ws_read_buffer_bytes)
        .build_layer();
    let gw = Gateway::new(GatewayParts {
        id: gateway_id.clone(),
        io: io.clone(),
        presence: backends.presence.clone(),
        calls: backends.calls.clone(),
        bus: backends.bus.clone(),
        store: backends.store.clone(),
        mirror: Mirror::default(),
        limits: Limits {
            max_payload_bytes: config.max_payload_bytes,
            socket_queue: config.socket_queue,
            announce_wait: Duration::from_secs(2),
            events_per_sec: config.events_per_sec,
            events_burst: config.events_burst,
            abuse_disconnect_after: config.abuse_disconnect_after,
            resume_grace: config.resume_grace(),
            resume_buffer: config.resume_buffer,
        },
        ice: config.ice(),
        auth,
        history: history::History::new(backends.history.clone()),
        missed: backends.relay_log.clone(),
    });
    {
        let mirror = gw.mirror().clone();
        meetup_platform::metrics::on_scrape(move || {
            let (users, calls) = mirror.counts();
            metrics::get().online_users.set(users as i64);
            metrics::get().live_calls.set(calls as i64);
        });
    }
    // The namespace exists before anything can broadcast to it.
    io.ns("/", socket::OnConnect::new(gw.clone()));
    let relays = backends
        .bus
        .subscribe(subjects::gateway_relay(&gateway_id))
        .await?;
    let pushes = backends
        .bus
        .subscribe(subjects::gateway_push(&gateway_id))
        .await?;
    // The lease comes before any socket: the services sweep the sessions of
    // gateways without one.
    let lease = cluster::take_lease(&gw).await?;
    let (stop_tasks, tasks_stopped) = watch::channel(false);
    let tasks = [
        tokio::spawn(dispatch::run(
            gw.clone(),
            relays,
            pushes,
            tasks_stopped.clone(),
        )),
        tokio::spawn(cluster::renew_lease(
            gw.clone(),
            lease,
            config.liveness(),
            tasks_stopped.clone(),
        )),
        tokio::spawn(cluster::watch(gw.clone(), config.liveness(), tasks_stopped)),
    ];

    let connection_limit = std::sync::Arc::new(edge::http::ConnectionLimit {
        limiter: edge::limits::IpLimiter::new(config.connections_per_ip_per_sec),
        trust_forwarded_for: config.trust_forwarded_for,
        trusted_proxies: edge::forwarded::TrustedProxies::new(config.trusted_proxies.clone()),
    });
    let origins = edge::origin::AllowedOrigins::parse(&config.client_urls)?;
    if origins.allows_any() {
        tracing::warn!(
            "CLIENT_URL allows any origin (*): any web page may open sockets for its visitors"
        );
    }
    let origin_check = std::sync::Arc::new(edge::origin::OriginCheck::new(origins.clone()));
    // Outermost first: CORS, then the origin check (a refused page costs its
    // visitor's address no connection allowance), the rate limit, Socket.IO.
    let app = edge::http::router(gw.clone())
        .layer(layer)
        .layer(axum::middleware::from_fn_with_state(
            connection_limit,
            edge::http::limit_connections,
        ))
        .layer(axum::middleware::from_fn_with_state(
            origin_check,
            edge::origin::check_origin,
        ))
        .layer(edge::http::cors(origins));
    tracing::info!(
        service = "gateway",
        addr = %listener.local_addr()?,
        gateway_id,
        bus = backends.bus.kind(),
        "listening"
    );

    let grace = config.shutdown_grace();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = edge::serve::serve(listener, app, async move {
        let _ = server_stopped.await;
    });
    let drain = {
        let gw = gw.clone();
        async move {
            shutdown.await;
            if tokio::time::timeout(grace, drain(&gw)).await.is_err() {
                tracing::warn!(?grace, "drain did not finish within the grace period");
            }
            let _ = stop_server.send(());
            tokio::time::sleep(grace).await;
        }
    };
    tokio::select! {
        () = server => {}
        () = drain => tracing::warn!("connections still open after the grace period"),
    }
    let _ = stop_tasks.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// Hands the registered sessions over (with a grace period: they turn away,
/// for their clients to resume through another gateway) and closes every
/// socket so clients reconnect elsewhere. Without a grace period, removes this
/// gateway's sessions from calls and presence at once (socket tasks do the
/// same one by one; whichever comes second finds nothing to do).
/// Longest the drain waits for the cleanups of the sockets it closed.
const CLEANUPS_WAIT: Duration = Duration::from_secs(5);

/// Resolves once no registered session is left here: each socket's cleanup
/// forgets its session when it is done with it (a poll: this runs once, while
/// the gateway stops).
async fn cleanups_done(gw: &Gateway) {
    while gw.sessions().snapshot().iter().any(|(_, s)| s.registered) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn drain(gw: &Gateway) {
    tracing::info!(sockets = gw.io().sockets().len(), "draining");
    let grace = gw.limits().resume_grace;
    let gateway_id = gw.id().to_owned();
    if !grace.is_zero() {
        // Before the hand-over takes its list: a session registered after it
        // is turned away by its own socket's cleanup when the socket is closed
        // below, instead of leaving its calls and presence as on a goodbye.
        gw.start_stopping();
        let (handed, failed) = handlers::cleanup::hand_over_all(gw, grace).await;
        tracing::info!(handed, failed, "sessions handed over");
        if let Err(error) = gw.io().disconnect().await {
            tracing::warn!(%error, "closing sockets failed");
        }
        // The sockets' own cleanups turn away the sessions registered after
        // the list was taken: they finish before the process goes (bounded;
        // past that, the sweeps turn them away as for a gateway that died).
        if tokio::time::timeout(CLEANUPS_WAIT, cleanups_done(gw))
            .await
            .is_err()
        {
            tracing::warn!("sockets still cleaning up; the sweeps will turn their sessions away");
        }
        // Released: the services' sweeps turn away what could not be handed
        // over here, as for a gateway that died.
        if let Err(error) = gw.store().gateways.remove(&keys::lease(&gateway_id)).await {
            tracing::warn!(%error, "lease not released");
        }
        return;
    } else if let Err(error) = gw.io().disconnect().await {
        tracing::warn!(%error, "closing sockets failed");
    }
    if let Err(status) = gw
        .calls()
        .remove_gateway(RemoveGatewayRequest {
            gateway_id: gateway_id.clone(),
        })
        .await
    {
        tracing::warn!(code = ?status.code(), error = status.message(), "calls cleanup failed");
    }
    if let Err(status) = gw
        .presence()
        .unregister_gateway(UnregisterGatewayRequest {
            gateway_id: gateway_id.clone(),
        })
        .await
    {
        tracing::warn!(code = ?status.code(), error = status.message(), "presence cleanup failed");
    }
    // Gone for good: nobody needs to wait for the lease to expire.
    if let Err(error) = gw.store().gateways.remove(&keys::lease(&gateway_id)).await {
        tracing::warn!(%error, "lease not released");
    }
}
