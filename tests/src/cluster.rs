//! The replicated system for resilience tests: a three-node NATS cluster with
//! JetStream (buckets with three replicas), two replicas of each service and two
//! gateways balancing over them. Every process can be stopped (SIGKILL or
//! SIGTERM) and started again on the same address, NATS nodes on the same store.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{
    GatewayProcess, Process, START_TIMEOUT, ServiceProcess, StoreDir, nats_server_path, temp_dir,
};

/// How many NATS nodes the cluster has.
pub const NATS_NODES: usize = 3;

/// `n` distinct free loopback ports: all bound at once (so no two are equal),
/// then released for the processes to take. Route ports must be known before
/// any node starts, hence no `-p -1`.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// One node of the NATS cluster; its ports and store survive restarts.
pub struct NatsNode {
    pub name: String,
    pub port: u16,
    cluster_port: u16,
    /// The HTTP monitoring port (`/healthz`).
    monitor_port: u16,
    routes: String,
    store: Arc<StoreDir>,
    process: Option<Process>,
    /// What the processes before a restart printed.
    earlier_output: String,
}

impl NatsNode {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the node (on its ports and store) and waits until it serves clients.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let monitor = self.monitor_port.to_string();
        let cluster = format!("nats://127.0.0.1:{}", self.cluster_port);
        let store = self.store.0.to_string_lossy().into_owned();
        let process = Process::spawn(
            &self.name,
            &nats_server_path()?,
            &[
                "-a",
                "127.0.0.1",
                "-p",
                &port,
                "-m",
                &monitor,
                "-js",
                "-sd",
                &store,
                "--server_name",
                &self.name,
                "--cluster_name",
                "meetup",
                "--cluster",
                &cluster,
                "--routes",
                &self.routes,
            ],
            &[],
        )?;
        process
            .wait_for_line(START_TIMEOUT, |line| {
                line.contains("Server is ready").then_some(())
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }

    /// True when the node's `/healthz` says its JetStream is healthy: it has
    /// a metadata leader and every stream and consumer it holds is current.
    pub async fn is_healthy(&self) -> bool {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.monitor_port));
        matches!(crate::http_get(addr, "/healthz").await, Ok((200, _)))
    }

    /// Sends `signal` (`KILL`, `TERM`) and waits for the exit.
    pub async fn stop(&mut self, signal: &str) -> anyhow::Result<()> {
        if let Some(mut process) = self.process.take() {
            if process.is_running() {
                process.signal(signal)?;
            }
            let exited = process.wait_exit(Duration::from_secs(15)).await;
            self.earlier_output.push_str(&process.output());
            self.earlier_output.push('\n');
            exited?;
        }
        Ok(())
    }

    /// Everything the node printed, restarts included.
    pub fn output(&self) -> String {
        let current = self
            .process
            .as_ref()
            .map(Process::output)
            .unwrap_or_default();
        format!("{}{current}", self.earlier_output)
    }
}

/// Three `nats-server` processes with routes to each other and JetStream.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// Starts the three nodes and waits until JetStream accepts a bucket with
    /// three replicas (a metadata leader is elected and every node is a peer).
    pub async fn start() -> anyhow::Result<Self> {
        let ports = free_ports(3 * NATS_NODES)?;
        let (client, rest) = ports.split_at(NATS_NODES);
        let (cluster, monitor) = rest.split_at(NATS_NODES);
        let mut nodes = Vec::new();
        for n in 0..NATS_NODES {
            let routes = (0..NATS_NODES)
                .filter(|&other| other != n)
                .map(|other| format!("nats://127.0.0.1:{}", cluster[other]))
                .collect::<Vec<_>>()
                .join(",");
            nodes.push(NatsNode {
                name: format!("n{n}"),
                port: client[n],
                cluster_port: cluster[n],
                monitor_port: monitor[n],
                routes,
                store: Arc::new(StoreDir(temp_dir(&format!("meetup-nats-n{n}"))?)),
                process: None,
                earlier_output: String::new(),
            });
        }
        // Together: a node alone waits for its routes before it is ready.
        futures::future::try_join_all(nodes.iter_mut().map(NatsNode::start)).await?;
        let cluster = NatsCluster { nodes };
        cluster.wait_jetstream_ready().await?;
        Ok(cluster)
    }

    /// Every node's client URL, comma-separated, as `NATS_URL` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let servers: Vec<async_nats::ServerAddr> = self
            .nodes
            .iter()
            .map(|n| n.url().parse())
            .collect::<Result<_, _>>()?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(servers)
            .await?;
        Ok(async_nats::jetstream::new(client))
    }

    /// Retries creating (then deleting) a bucket with three replicas until it works.
    async fn wait_jetstream_ready(&self) -> anyhow::Result<()> {
        let js = self.jetstream().await?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let created = js
                .create_key_value(async_nats::jetstream::kv::Config {
                    bucket: "harness_probe".to_owned(),
                    num_replicas: NATS_NODES,
                    ..Default::default()
                })
                .await;
            match created {
                Ok(_) => {
                    js.delete_key_value("harness_probe").await?;
                    return Ok(());
                }
                Err(error) if Instant::now() >= deadline => {
                    bail!("JetStream never became ready: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until every node reports itself healthy (`/healthz`), every
    /// stream (the buckets) has a leader and every replica is current: after a
    /// node restart, before the next node may go.
    pub async fn wait_streams_current(&self) -> anyhow::Result<()> {
        use futures::TryStreamExt;
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &self.nodes {
            while !node.is_healthy().await {
                if Instant::now() >= deadline {
                    bail!("{} never reported healthy", node.name);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let js = self.jetstream().await?;
        loop {
            let state: anyhow::Result<Vec<String>> = async {
                let infos: Vec<_> = js.streams().try_collect().await?;
                Ok(infos
                    .into_iter()
                    .filter_map(|info| {
                        let cluster = info.cluster.as_ref();
                        let current = cluster.is_some_and(|c| {
                            c.leader.is_some()
                                && c.replicas.len() == NATS_NODES - 1
                                && c.replicas.iter().all(|r| r.current && !r.offline)
                        });
                        (!current).then(|| format!("{}: {:?}", info.config.name, info.cluster))
                    })
                    .collect())
            }
            .await;
            match state {
                Ok(lagging) if lagging.is_empty() => return Ok(()),
                other if Instant::now() >= deadline => {
                    bail!("streams not current: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// Service replicas, in a [`ReplicatedCluster`].
pub const SERVICE_REPLICAS: usize = 2;

/// NATS x3, presence x2, calls x2, gateways x2; every process restartable.
pub struct ReplicatedCluster {
    pub nats: NatsCluster,
    pub presence: Vec<ServiceProcess>,
    pub calls: Vec<ServiceProcess>,
    pub gateways: Vec<GatewayProcess>,
}

/// With `MEETUP_TEST_LOGS=<dir>` set, every process's output is written there
/// when the cluster goes (also when a test fails), to study a failure.
impl Drop for ReplicatedCluster {
    fn drop(&mut self) {
        if let Some(dir) = std::env::var_os("MEETUP_TEST_LOGS") {
            let dir = std::path::PathBuf::from(dir).join(format!("{}", std::process::id()));
            if let Err(error) = self.dump_logs(&dir) {
                eprintln!("cannot write logs to {}: {error}", dir.display());
            } else {
                eprintln!("process logs in {}", dir.display());
            }
        }
    }
}

impl ReplicatedCluster {
    /// Starts everything and waits until every gateway is ready. `env` goes to
    /// every process (services and gateways).
    pub async fn start(env: &[(&str, String)]) -> anyhow::Result<Self> {
        let nats = NatsCluster::start().await?;
        let urls = nats.urls();
        let mut common = vec![("JETSTREAM_REPLICAS", NATS_NODES.to_string())];
        common.extend(env.iter().cloned());
        let mut presence = Vec::new();
        let mut calls = Vec::new();
        for _ in 0..SERVICE_REPLICAS {
            presence.push(ServiceProcess::start_env("presence", Some(&urls), &common).await?);
            calls.push(ServiceProcess::start_env("calls", Some(&urls), &common).await?);
        }
        for replica in &presence {
            replica
                .wait_healthy("meetup.presence.v1.PresenceService")
                .await?;
        }
        for replica in &calls {
            replica.wait_healthy("meetup.calls.v1.CallService").await?;
        }
        let list = |replicas: &[ServiceProcess]| {
            replicas
                .iter()
                .map(ServiceProcess::url)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut gateway_env = common.clone();
        gateway_env.extend([
            ("NATS_URL", urls.clone()),
            ("PRESENCE_URL", list(&presence)),
            ("CALLS_URL", list(&calls)),
        ]);
        let mut gateways = Vec::new();
        for n in 0..2 {
            gateways.push(
                GatewayProcess::start(&format!("gw-{n}"), &gateway_env)
                    .await
                    .with_context(|| format!("gateway gw-{n}"))?,
            );
        }
        Ok(ReplicatedCluster {
            nats,
            presence,
            calls,
            gateways,
        })
    }

    pub fn url(&self, gateway: usize) -> String {
        self.gateways[gateway].url()
    }

    /// Writes every process's output so far to `<dir>/<process>.log`.
    pub fn dump_logs(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut logs: Vec<(String, String)> = Vec::new();
        for node in &self.nats.nodes {
            logs.push((node.name.clone(), node.output()));
        }
        for (kind, replicas) in [("presence", &self.presence), ("calls", &self.calls)] {
            for (n, replica) in replicas.iter().enumerate() {
                logs.push((format!("{kind}-{n}"), replica.all_output()));
            }
        }
        for gateway in &self.gateways {
            logs.push((gateway.id.clone(), gateway.all_output()));
        }
        for (name, output) in logs {
            std::fs::write(dir.join(format!("{name}.log")), output)?;
        }
        Ok(())
    }

    /// Waits until every gateway answers `/readyz` 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        for gateway in &self.gateways {
            gateway.wait_ready(true).await?;
        }
        Ok(())
    }
}
