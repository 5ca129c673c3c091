//! What every service binary does around its gRPC API: logging, the state store
//! (JetStream over NATS, or in memory when alone), the listeners, `/metrics`, a
//! background sweep, and an orderly stop on SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::Bus;
use crate::store::leases::LeaseView;
use crate::store::{BucketSettings, StateStore};
use crate::telemetry::{self, LogFormat};

/// Settings every service binary shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// NATS servers (comma-separated) whose JetStream holds the state. Without
    /// it, the state lives in this process (useful only to load-test the API on
    /// its own: no gateway can share it).
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// How long to wait for NATS at start, in seconds.
    #[arg(long, env = "NATS_CONNECT_TIMEOUT_SECS", default_value_t = 10)]
    pub nats_connect_timeout_secs: u64,
    /// Copies of each JetStream bucket (1 on one NATS node, 3 on a three-node cluster).
    #[arg(long, env = "JETSTREAM_REPLICAS", default_value_t = 1)]
    pub jetstream_replicas: usize,
    /// Lifetime of a gateway lease: a gateway that has not renewed its lease for
    /// this long is dead to the cluster.
    #[arg(long, env = "GATEWAY_TIMEOUT_MS", default_value_t = 3000)]
    pub gateway_timeout_ms: u64,
    /// How often this replica looks for sessions of gateways whose lease is gone
    /// (0: never; a service alone has no gateways to look for).
    #[arg(long, env = "SWEEP_INTERVAL_MS", default_value_t = 500)]
    pub sweep_interval_ms: u64,
    /// How long the sessions of a dead gateway stay away (resumable through
    /// another gateway) before they go; 0: they go at once.
    #[arg(long, env = "RESUME_GRACE_MS", default_value_t = DEFAULT_RESUME_GRACE_MS)]
    pub resume_grace_ms: u64,
    /// Bearer token every API call must carry (unset: no check).
    #[arg(long, env = "INTERNAL_API_TOKEN", hide_env_values = true)]
    pub internal_api_token: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// `RESUME_GRACE_MS` when unset, for the gateway and the services alike.
pub const DEFAULT_RESUME_GRACE_MS: u64 = 15_000;

/// How often away sessions whose time ran out are looked for.
pub const EXPIRE_EVERY: Duration = Duration::from_millis(500);

impl ServiceArgs {
    pub fn resume_grace(&self) -> Duration {
        Duration::from_millis(self.resume_grace_ms)
    }

    pub fn bucket_settings(&self) -> BucketSettings {
        BucketSettings {
            replicas: self.jetstream_replicas.max(1),
            lease_ttl: Duration::from_millis(self.gateway_timeout_ms.max(100)),
        }
    }

    /// The sweep interval, when sweeps make sense (gateways share the store).
    pub fn sweep_interval(&self, store: &StateStore) -> Option<Duration> {
        (self.sweep_interval_ms > 0 && store.kind() == "jetstream")
            .then(|| Duration::from_millis(self.sweep_interval_ms))
    }
}

/// The shutdown signal handed to the service.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs one service: binds `listen` and `metrics_listen` at once (health says
/// NOT_SERVING, calls are answered UNAVAILABLE), opens the state store (JetStream
/// over NATS, waiting as long as it takes: see [`crate::startup`]), then serves
/// the API `build` makes of it with the background tasks it starts. Health
/// follows the NATS connection from then on. Returns once SIGTERM (or SIGINT)
/// has stopped the server and the background, and NATS is drained.
pub async fn run<S, B, Fut>(
    name: &'static str,
    listen: SocketAddr,
    metrics_listen: SocketAddr,
    args: &ServiceArgs,
    build: impl FnOnce(StateStore, Bus) -> Fut,
) -> anyhow::Result<()>
where
    S: tower::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<B>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
    Fut: Future<Output = anyhow::Result<(S, Background)>>,
{
    let telemetry = telemetry::init(&format!("meetup-{name}"), args.log_format);
    // Before anyone can be told we listen: a SIGTERM from then on stops us
    // cleanly, also while we wait for NATS.
    let mut stop = crate::startup::stop_on(crate::shutdown::signal());
    let bus = match &args.nats_url {
        // Connects in the background, again and again until NATS is there.
        Some(url) => {
            let timeout = Duration::from_secs(args.nats_connect_timeout_secs);
            Bus::connect_nats(url, &format!("meetup-{name}"), timeout).await?
        }
        None => {
            tracing::warn!("NATS_URL is not set: the state lives in this process alone");
            Bus::local()
        }
    };
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(service = name, addr = %listener.local_addr()?, "listening");
    crate::grpc::warn_if_exposed(
        name,
        listener.local_addr()?,
        args.internal_api_token.as_deref(),
    );
    let metrics = TcpListener::bind(metrics_listen).await?;
    tracing::info!(service = format!("{name}-metrics"), addr = %metrics.local_addr()?, "listening");
    let metrics_server = tokio::spawn(crate::metrics::serve(
        metrics,
        crate::startup::stopped(stop.clone()),
    ));
    let gate = crate::grpc::Gate::<S>::default();
    let (serving, serving_now) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(crate::grpc::serve_while(
        listener,
        gate.clone(),
        serving_now,
        crate::startup::stopped(stop.clone()),
    ));
    let settings = args.bucket_settings();
    let store = crate::startup::retry("state store", &mut stop, || {
        StateStore::for_bus(&bus, settings)
    })
    .await;
    let mut background = None;
    let mut result = Ok(());
    if let Some(store) = store {
        tracing::info!(service = name, store = store.kind(), "ready");
        bus.warn_if_old_server();
        match build(store, bus.clone()).await {
            Ok((api, tasks)) => {
                gate.open(api);
                background = Some(tasks);
                follow_connection(&bus, &serving, stop.clone()).await;
            }
            Err(error) => result = Err(error),
        }
    }
    drop(serving);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => result = result.and(Err(error)),
        Err(error) => result = result.and(Err(error.into())),
    }
    if let Some(background) = background {
        background.stop().await;
    }
    let _ = metrics_server.await;
    bus.drain().await;
    tracing::info!("stopped");
    telemetry.shutdown().await;
    result
}

/// Says SERVING while the bus is connected (JetStream is reached through it),
/// NOT_SERVING while it is not, until `stop`.
async fn follow_connection(
    bus: &Bus,
    serving: &tokio::sync::watch::Sender<bool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let up = bus.is_connected();
        serving.send_if_modified(|was| {
            if *was != up {
                tracing::info!(connected = up, "state store connection changed");
            }
            std::mem::replace(was, up) != up
        });
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Calls `tick` every `every` until `stop` resolves: the services' sweeps and
/// gauges. A slow tick delays the next one rather than piling up.
pub async fn every<F, Fut>(every: Duration, mut tick: F, stop: impl Future<Output = ()>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = interval.tick() => tick().await,
        }
    }
}

/// Every `interval` until `stop`: one sweep of the sessions of gateways
/// without a lease, `sweep_once` given this replica's view of the leases
/// (kept from one sweep to the next: it is what times a lease's absence).
/// A failed sweep is logged as `what` and tried again at the next tick.
pub async fn sweep_every<F, Fut, T, E>(
    interval: Duration,
    lease_ttl: Duration,
    what: &'static str,
    sweep_once: F,
    stop: impl Future<Output = ()>,
) where
    F: Fn(std::sync::Arc<tokio::sync::Mutex<LeaseView>>) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let view = std::sync::Arc::new(tokio::sync::Mutex::new(LeaseView::new(lease_ttl)));
    every(
        interval,
        || {
            let sweep = sweep_once(view.clone());
            async move {
                if let Err(error) = sweep.await {
                    tracing::warn!(%error, "{what} failed");
                }
            }
        },
        stop,
    )
    .await;
}

/// Every `interval` until `stop`: one pass that expires away sessions (their
/// grace ran out), counting what went in the counter `metric` (`help`). A
/// failed pass is logged as `what` and tried again at the next tick.
pub async fn expire_every<F, Fut, E>(
    interval: Duration,
    metric: &'static str,
    help: &'static str,
    what: &'static str,
    expire_once: F,
    stop: impl Future<Output = ()>,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u32, E>>,
    E: std::fmt::Display,
{
    let expired = prometheus_client::metrics::counter::Counter::<u64>::default();
    crate::metrics::register(metric, help, expired.clone());
    every(
        interval,
        || {
            let (pass, expired) = (expire_once(), expired.clone());
            async move {
                match pass.await {
                    Ok(n) => {
                        expired.inc_by(u64::from(n));
                    }
                    Err(error) => tracing::warn!(%error, "{what} failed"),
                }
            }
        },
        stop,
    )
    .await;
}

/// A service's background tasks (sweeps, gauges), stopped together.
#[derive(Debug)]
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Default for Background {
    fn default() -> Self {
        Background {
            stop: tokio::sync::watch::channel(false).0,
            tasks: Vec::new(),
        }
    }
}

impl Background {
    /// Resolves once [`Background::stop`] is called.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopped = self.stop.subscribe();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    }

    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Tells every task to stop and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
