//! The `idle` scenario: N connected (optionally registered) users and the
//! resident memory of the target process per connection.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sio::Conn;

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
    let mut conns = Vec::with_capacity(args.users);
    for i in 0..args.users {
        let conn = Conn::connect(&args.gateways[i % args.gateways.len()], |_, _| {}).await?;
        if args.register {
            let id = format!("idle-{run_id}-{i}");
            conn.emit_ack_raw(
                "user-joined",
                &json!({ "id": id, "username": id }).to_string(),
                Duration::from_secs(60),
            )
            .await?;
        }
        conns.push(conn);
    }
    let connected_s = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = total_rss(&args.pids)?;
    let open = conns.iter().filter(|c| !c.is_closed()).count();
    drop(conns);
    Ok(json!({
        "scenario": "idle",
        "gateways": args.gateways,
        "users": args.users,
        "registered": args.register,
        "connections_open": open,
        "connect_s": connected_s,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_per_connection_kib": (after.saturating_sub(before)) as f64 / args.users as f64,
    }))
}
