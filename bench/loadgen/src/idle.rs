//! The `idle` scenario: N connected (optionally registered) users and the
//! resident memory of the target process per connection.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use futures::{StreamExt, TryStreamExt};

use crate::sio::{Conn, ConnectOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    #[arg(long = "gateway", required = true)]
    pub gateways: Vec<String>,
    /// Process ids whose resident memory is measured (the gateways).
    #[arg(long = "pid", required = true)]
    pub pids: Vec<u32>,
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Register each connection (user-joined) as well.
    #[arg(long)]
    pub register: bool,
    /// Seconds to wait after connecting before measuring.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// `full` (every change sends users-list) or `delta` (asked in the handshake).
    #[arg(long, default_value = "full", value_parser = ["full", "delta"])]
    pub presence: String,
    /// Connect from 127.0.0.1 ... 127.0.0.N in turn (50,000 connections need
    /// more than one source address's ephemeral ports).
    #[arg(long, default_value_t = 1)]
    pub sources: u8,
    /// Connections opened at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Seconds over which the CPU the measured processes spend at idle is sampled.
    #[arg(long, default_value_t = 0.0)]
    pub cpu_window: f64,
}

/// User + system CPU seconds of `pid` so far, from /proc.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: the fields after it start past the ")".
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    // USER_HZ is 100 on Linux.
    Ok(ticks / 100.0)
}

/// Resident set size of `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}

fn total_rss(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|p| rss_kib(*p)).sum()
}

pub async fn run(args: &IdleArgs) -> anyhow::Result<Value> {
    let before = total_rss(&args.pids)?;
    let run_id = format!("{:x}", std::process::id());
    let start = Instant::now();
    let options: Vec<ConnectOptions> = (0..args.sources.max(1) as usize)
        .map(|i| ConnectOptions {
            auth: (args.presence == "delta").then(|| r#"{"presence":"delta"}"#.to_owned()),
            source: crate::storm::source_address(i, args.sources),
        })
        .collect();
    let register = args.register;
    let opened = futures::stream::iter(0..args.users)
        .map(|i| {
            let gateway = args.gateways[i % args.gateways.len()].clone();
            let options = options[i % options.len()].clone();
            let run_id = run_id.clone();
            async move {
                let conn = Conn::connect_with(&gateway, &options, |_, _| {}).await?;
                if register {
                    let id = format!("idle-{run_id}-{i}");
                    conn.emit_ack_raw(
                        "user-joined",
                        &json!({ "id": id, "username": id }).to_string(),
                        Duration::from_secs(60),
                    )
                    .await?;
                }
                anyhow::Ok(conn)
            }
        })
        .buffer_unordered(args.concurrency.max(1));
    let conns: Vec<Conn> = opened.try_collect().await?;
    let connected_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = total_rss(&args.pids)?;
    let cpu_at_idle = if args.cpu_window > 0.0 {
        let before: f64 = args
            .pids
            .iter()
            .map(|p| cpu_seconds(*p))
            .sum::<anyhow::Result<f64>>()?;
        tokio::time::sleep(Duration::from_secs_f64(args.cpu_window)).await;
        let after: f64 = args
            .pids
            .iter()
            .map(|p| cpu_seconds(*p))
            .sum::<anyhow::Result<f64>>()?;
        Some((after - before) / args.cpu_window)
    } else {
        None
    };
    let open = conns.iter().filter(|c| !c.is_closed()).count();
    drop(conns);
    Ok(json!({
        "scenario": "idle",
        "gateways": args.gateways,
        "users": args.users,
        "registered": args.register,
        "presence": args.presence,
        "sources": args.sources,
        "cpu_busy_at_idle": cpu_at_idle,
        "connections_open": open,
        "connect_s": connected_s,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_per_connection_kib": (after.saturating_sub(before)) as f64 / args.users as f64,
    }))
}
