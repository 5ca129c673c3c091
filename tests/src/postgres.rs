//! A real PostgreSQL for the tests: `initdb` into a temporary folder, `postgres`
//! on a free loopback port with its socket in that folder, one database created,
//! all killed and removed on drop. Never the machine's shared instance.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, the server
//! runs as the `postgres` user (Debian's packages create it).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

use crate::{Process, START_TIMEOUT};

pub struct PostgresServer {
    // Declared first: dropped (killed) before the folder is removed.
    process: Process,
    dir: PathBuf,
    pub port: u16,
}

impl PostgresServer {
    /// Starts a fresh server with one database, `meetup`.
    pub async fn start() -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir()?;
        let dir = std::env::temp_dir().join(format!(
            "meetup-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let owner = run_as()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(std::process::Stdio::null());
        as_owner(&mut initdb, owner);
        let output = initdb.output().context("cannot run initdb")?;
        if !output.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        // A free port now; taken by someone else in between is retried.
        let mut last_error = None;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            match start_server(&bin, &data, &dir, port, owner).await {
                Ok(process) => {
                    let server = PostgresServer { process, dir, port };
                    server.create_database("meetup")?;
                    return Ok(server);
                }
                Err(error) => last_error = Some(error),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
    }

    /// Stops the server (SIGKILL); its data stays for [`PostgresServer::start_again`].
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if self.process.is_running() {
            self.process.signal("KILL")?;
        }
        self.process
            .wait_exit(std::time::Duration::from_secs(10))
            .await?;
        Ok(())
    }

    /// Starts the stopped server again, on its port with its data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let data = self.dir.join("data");
        // A killed postmaster leaves its pid file; the new one must not think it runs.
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        self.process = start_server(&bin_dir()?, &data, &self.dir, self.port, run_as()?).await?;
        Ok(())
    }

    /// `postgres://` URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates another database (one per test when tests share a server).
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        let output = Command::new(bin_dir()?.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .context("cannot run createdb")?;
        if !output.status.success() {
            bail!(
                "createdb failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Output of the server so far (for failure reports).
    pub fn output(&self) -> String {
        self.process.output()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown of the postmaster and its backends.
        if self.process.signal("QUIT").is_ok() {
            let _ = self.process.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start_server(
    bin: &Path,
    data: &Path,
    socket_dir: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<Process> {
    let mut command = Command::new(bin.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(socket_dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            // A test database: durability is not the point, speed is.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            // Little WAL on disk: the test machine's disk is shared.
            "-c",
            "wal_level=minimal",
            "-c",
            "max_wal_senders=0",
            "-c",
            "max_wal_size=128MB",
        ]);
    as_owner(&mut command, owner);
    let process = Process::spawn_command("postgres", command)?;
    process
        .wait_for_line(START_TIMEOUT, |line| {
            if line.contains("database system is ready to accept connections") {
                Some(Ok(()))
            } else if line.contains("could not bind") || line.contains("FATAL") {
                Some(Err(anyhow::anyhow!("postgres failed: {line}")))
            } else {
                None
            }
        })
        .await??;
    Ok(process)
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

/// The uid and gid to run PostgreSQL as: `postgres` when we are root, else ourselves.
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    let me = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return Ok(None);
    }
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        if !out.status.success() {
            bail!("running as root, and there is no postgres user to run PostgreSQL as");
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/<version>/bin`.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => {
            bail!("PostgreSQL not found: install it (apt-get install postgresql) or set PG_BIN_DIR")
        }
    }
}
