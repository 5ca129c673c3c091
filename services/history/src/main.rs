//! `meetup-history`: the call history service as its own process.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use meetup_history::source::{self, SourceConfig};
use meetup_platform::grpc::Gate;
use meetup_platform::startup;
use meetup_platform::telemetry::{self, LogFormat};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "meetup-history",
    about = "MeetUp call history gRPC service",
    version
)]
struct Config {
    /// Address of the gRPC API.
    #[arg(long, env = "HISTORY_LISTEN", default_value = "0.0.0.0:50053")]
    listen: SocketAddr,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:9103")]
    metrics_listen: SocketAddr,
    /// `postgres://...`, `sqlite://path` or `sqlite::memory:`.
    #[arg(
        long,
        env = "HISTORY_DATABASE_URL",
        default_value = "sqlite://data/history.db"
    )]
    database_url: String,
    /// Call records older than this many days are removed (0: kept for ever).
    #[arg(long, env = "HISTORY_RETENTION_DAYS", default_value_t = 90)]
    retention_days: u64,
    /// NATS server whose JetStream carries the call snapshots. Unset: no ingest
    /// (the API serves what the database holds).
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Stream of the call snapshots (the `meetup_calls` KV bucket's).
    #[arg(long, env = "HISTORY_STREAM", default_value = "KV_meetup_calls")]
    stream: String,
    /// Subjects of that stream to consume.
    #[arg(long, env = "HISTORY_SUBJECT", default_value = "$KV.meetup_calls.c.>")]
    subject: String,
    /// Durable consumer name (shared by the replicas of one database).
    #[arg(long, env = "HISTORY_CONSUMER", default_value = "meetup-history")]
    consumer: String,
    /// Seconds a delivered snapshot may stay unacknowledged before it comes again.
    #[arg(long, env = "HISTORY_ACK_WAIT_SECS", default_value_t = 30)]
    ack_wait_secs: u64,
    /// Bearer token every API call must carry (unset: no check).
    #[arg(long, env = "INTERNAL_API_TOKEN", hide_env_values = true)]
    internal_api_token: Option<String>,
    /// `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = telemetry::init("meetup-history", config.log_format);
    // SIGTERM stops us cleanly from now on, also while we wait for the database.
    let mut stop = startup::stop_on(meetup_platform::shutdown::signal());
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!(service = "history", addr = %listener.local_addr()?, "listening");
    meetup_platform::grpc::warn_if_exposed(
        "history",
        listener.local_addr()?,
        config.internal_api_token.as_deref(),
    );
    let metrics = TcpListener::bind(config.metrics_listen).await?;
    tracing::info!(service = "history-metrics", addr = %metrics.local_addr()?, "listening");
    let mut tasks = vec![tokio::spawn({
        let shutdown = startup::stopped(stop.clone());
        async move {
            if let Err(error) = meetup_platform::metrics::serve(metrics, shutdown).await {
                tracing::error!(%error, "metrics server failed");
            }
        }
    })];
    // Health says NOT_SERVING, and calls are answered UNAVAILABLE, until the
    // database is open.
    let gate = Gate::default();
    let (serving, serving_now) = watch::channel(false);
    let server = tokio::spawn(meetup_platform::grpc::serve_while(
        listener,
        gate.clone(),
        serving_now,
        startup::stopped(stop.clone()),
    ));
    let store = open_database(&config.database_url, &mut stop).await?;
    let mut nats = None;
    if let Some(store) = &store {
        tracing::info!(backend = ?store.backend(), "history database ready");
        if config.retention_days > 0 {
            tasks.push(tokio::spawn(meetup_history::prune_periodically(
                store.clone(),
                Duration::from_secs(config.retention_days * 86_400),
                Duration::from_secs(3600),
                startup::stopped(stop.clone()),
            )));
        }
        nats = match &config.nats_url {
            Some(url) => {
                // Connects in the background, again and again until NATS is
                // there; the source waits for its stream meanwhile.
                let client = async_nats::ConnectOptions::new()
                    .name("meetup-history")
                    .retry_on_initial_connect()
                    .max_reconnects(None)
                    .reconnect_delay_callback(meetup_platform::bus::reconnect_delay)
                    .connect(url)
                    .await
                    .with_context(|| format!("cannot connect to NATS at {url}"))?;
                let source_config = SourceConfig {
                    stream: config.stream.clone(),
                    filter_subject: config.subject.clone(),
                    durable: config.consumer.clone(),
                    ack_wait: Duration::from_secs(config.ack_wait_secs.max(1)),
                };
                let js = async_nats::jetstream::new(client.clone());
                tasks.push(tokio::spawn(source::run(
                    js,
                    source_config,
                    store.clone(),
                    source::decode_call_record,
                    startup::stopped(stop.clone()),
                )));
                Some(client)
            }
            None => {
                tracing::warn!("NATS_URL is not set: no call snapshots are consumed");
                None
            }
        };
        gate.open(meetup_history::api(
            store.clone(),
            config.internal_api_token.clone(),
        ));
        let _ = serving.send(true);
    }
    let result = match server.await {
        Ok(result) => result,
        Err(error) => Err(error.into()),
    };
    drop(serving);
    for task in tasks {
        let _ = task.await;
    }
    if let Some(client) = nats {
        let _ = client.drain().await;
    }
    if let Some(store) = store {
        store.close().await;
    }
    tracing::info!("stopped");
    telemetry.shutdown().await;
    result
}

/// Opens the history database. PostgreSQL may not be up yet (every process of
/// a deployment starts at once): it is waited for, as long as it takes. A
/// SQLite file is local, so a failure to open it is final. `None` when the
/// process was asked to stop while waiting.
async fn open_database(
    url: &str,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<meetup_history::HistoryStore>> {
    let context = || format!("cannot open the history database at HISTORY_DATABASE_URL={url}");
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        let store = meetup_history::HistoryStore::connect(url)
            .await
            .with_context(context)?;
        return Ok(Some(store));
    }
    Ok(startup::retry("history database", stop, || {
        meetup_history::HistoryStore::connect(url)
    })
    .await)
}
