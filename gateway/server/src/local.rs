//! The services this process runs itself when no remote replicas are configured:
//! presence (no `PRESENCE_URL`), calls (no `CALLS_URL`) and history (no
//! `HISTORY_URL`). Each is called by the gateway directly (a [`Transport::Local`]);
//! presence and calls also serve their gRPC API on `PRESENCE_LISTEN` and
//! `CALLS_LISTEN`, so that other internal services can reach them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use meetup_gateway::{Config, Transport};
use meetup_history::HistoryStore;
use meetup_platform::Bus;
use meetup_platform::grpc::in_process;
use meetup_platform::store::StateStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::history_feed;

/// The tasks of the services started here, stopped together.
pub struct LocalServices {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    history: Option<HistoryStore>,
}

impl Default for LocalServices {
    fn default() -> Self {
        LocalServices {
            tasks: Vec::new(),
            stop: watch::channel(false).0,
            history: None,
        }
    }
}

impl LocalServices {
    /// Resolves when [`LocalServices::stop`] is called: what else this process
    /// started for its backends (remote replicas' resolvers) stops with them.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }

    /// The presence service, on `store` and `bus`.
    pub async fn presence(
        &mut self,
        config: &Config,
        store: &StateStore,
        bus: &Bus,
    ) -> anyhow::Result<Transport> {
        let listener = bind(config.presence_listen, "PRESENCE_LISTEN").await?;
        tracing::info!(service = "presence", addr = %listener.local_addr()?, "listening");
        let presence = meetup_presence::PresenceStore::new(store, config.max_sockets_per_user)
            .with_resume_grace(config.resume_grace());
        self.tasks.push(tokio::spawn(meetup_presence::gauges(
            presence.clone(),
            self.stopped(),
        )));
        self.tasks.push(tokio::spawn(meetup_presence::expire_away(
            presence.clone(),
            meetup_platform::service::EXPIRE_EVERY,
            self.stopped(),
        )));
        let api = meetup_presence::api(presence, bus.clone(), config.internal_api_token.clone());
        let server = meetup_platform::grpc::serve(listener, api.clone(), self.stopped());
        self.tasks.push(tokio::spawn(serve("presence", server)));
        Ok(Transport::Local(in_process(api, config.rpc_timeout())))
    }

    /// The call service, on `store`.
    pub async fn calls(
        &mut self,
        config: &Config,
        store: &StateStore,
    ) -> anyhow::Result<Transport> {
        let listener = bind(config.calls_listen, "CALLS_LISTEN").await?;
        tracing::info!(service = "calls", addr = %listener.local_addr()?, "listening");
        let registry = meetup_calls::CallRegistry::new(
            store,
            meetup_calls::CallLimits {
                max_participants: config.max_call_participants,
                max_calls_per_user: config.max_calls_per_user,
                resume_grace: config.resume_grace(),
                ring_timeout: Duration::from_millis(config.ring_timeout_ms.max(1)),
                chat_history: config.call_chat_history.max(1),
            },
        );
        self.tasks.push(tokio::spawn(meetup_calls::gauges(
            registry.clone(),
            self.stopped(),
        )));
        self.tasks.push(tokio::spawn(meetup_calls::expire_away(
            registry.clone(),
            meetup_platform::service::EXPIRE_EVERY,
            self.stopped(),
        )));
        let api = meetup_calls::api(registry, config.internal_api_token.clone());
        let server = meetup_platform::grpc::serve(listener, api.clone(), self.stopped());
        self.tasks.push(tokio::spawn(serve("calls", server)));
        Ok(Transport::Local(in_process(api, config.rpc_timeout())))
    }

    /// The history service, on `HISTORY_DATABASE_URL`, fed from `store`'s calls
    /// bucket. Its API is not served on the network: only the gateway calls it.
    pub async fn history(
        &mut self,
        config: &Config,
        store: &StateStore,
    ) -> anyhow::Result<Transport> {
        if config.nats_url.is_some() {
            tracing::warn!(
                "HISTORY_URL is not set: this gateway keeps its own call history; set it in a cluster"
            );
        }
        let records = HistoryStore::connect(&config.history_database_url)
            .await
            .with_context(|| {
                format!(
                    "cannot open the call history at HISTORY_DATABASE_URL={}",
                    config.history_database_url
                )
            })?;
        tracing::info!(backend = ?records.backend(), "in-process call history ready");
        self.tasks.push(tokio::spawn(history_feed::follow_calls(
            records.clone(),
            store.calls.clone(),
            self.stopped(),
        )));
        self.history = Some(records.clone());
        let api = meetup_history::api(records, config.internal_api_token.clone());
        Ok(Transport::Local(in_process(api, config.rpc_timeout())))
    }

    /// Stops every service started here (after the gateway is done with them).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Some(history) = self.history {
            history.close().await;
        }
    }
}

async fn bind(addr: SocketAddr, name: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {name}={addr} for the in-process service"))
}

async fn serve(name: &'static str, server: impl Future<Output = anyhow::Result<()>>) {
    if let Err(error) = server.await {
        tracing::error!(service = name, %error, "in-process service failed");
    }
}
