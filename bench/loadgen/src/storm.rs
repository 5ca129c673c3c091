//! The `storm` scenario: N users connect and register at once; the time until
//! every client holds exactly all N users, and how many presence messages and
//! bytes that took. With `--presence full` (today's protocol) a client holds
//! its last `users-list`; with `--presence delta` (the opt-in extension) its
//! one `users-list` with every `user-joined` and `user-left` since applied.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sio::{Conn, ConnectOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    #[arg(long = "gateway", required = true)]
    pub gateways: Vec<String>,
    /// Users joining at once.
    #[arg(long, default_value_t = 400)]
    pub users: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// `full` (every change sends users-list) or `delta` (asked in the handshake).
    #[arg(long, default_value = "full", value_parser = ["full", "delta"])]
    pub presence: String,
    /// Connect from 127.0.0.1 ... 127.0.0.N in turn (many connections need more
    /// than one source address's ephemeral ports).
    #[arg(long, default_value_t = 1)]
    pub sources: u8,
}

/// The local address of the `i`-th connection when spread over `sources` addresses.
pub fn source_address(i: usize, sources: u8) -> Option<std::net::IpAddr> {
    (sources > 1)
        .then(|| std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % sources as usize) as u8).into())
}

struct Client {
    /// The ids the client holds, when they last changed, and whether they are
    /// exactly the storm's users.
    last: Mutex<(Option<HashSet<String>>, Option<Instant>, bool)>,
}

/// Runs the storm and returns its results.
pub async fn run(args: &StormArgs) -> anyhow::Result<Value> {
    let run_id = format!("{:x}", std::process::id());
    let ids: Vec<String> = (0..args.users)
        .map(|i| format!("st-{run_id}-{i}"))
        .collect();
    let expected: Arc<HashSet<String>> = Arc::new(ids.iter().cloned().collect());
    let lists = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let presence_bytes = Arc::new(AtomicU64::new(0));
    let delta = args.presence == "delta";
    let sources = args.sources;
    let converged = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let gateway = args.gateways[i % args.gateways.len()].clone();
        let (id, expected, lists, bytes, presence_bytes, converged) = (
            id.clone(),
            expected.clone(),
            lists.clone(),
            bytes.clone(),
            presence_bytes.clone(),
            converged.clone(),
        );
        let prefix = format!("st-{run_id}-");
        tasks.push(tokio::spawn(async move {
            let client = Arc::new(Client {
                last: Mutex::new((None, None, false)),
            });
            let seen = client.clone();
            let options = ConnectOptions {
                auth: delta.then(|| r#"{"presence":"delta"}"#.to_owned()),
                source: source_address(i, sources),
            };
            let conn = Conn::connect_with(&gateway, &options, move |event, data| {
                // Only the ids: the other fields are skipped unparsed.
                #[derive(serde::Deserialize)]
                struct Listed {
                    id: String,
                }
                let mut last = match seen.last.lock() {
                    Ok(last) => last,
                    Err(_) => return,
                };
                let mut ids = last.0.take().unwrap_or_default();
                match event {
                    "users-list" => {
                        lists.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        ids = serde_json::from_str::<Vec<Listed>>(data)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|u| u.id)
                            .filter(|id| id.starts_with(&prefix))
                            .collect();
                    }
                    "user-joined" if delta => {
                        if let Ok(user) = serde_json::from_str::<Listed>(data)
                            && user.id.starts_with(&prefix)
                        {
                            ids.insert(user.id);
                        }
                    }
                    "user-left" if delta => {
                        if let Ok(id) = serde_json::from_str::<String>(data) {
                            ids.remove(&id);
                        }
                    }
                    "user-joined" | "user-left" => {
                        // Full lists: the deltas still go out, and count.
                        presence_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        last.0 = Some(ids);
                        return;
                    }
                    _ => {
                        last.0 = Some(ids);
                        return;
                    }
                }
                presence_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                let complete = ids == *expected;
                let was_complete = last.2;
                if complete && !was_complete {
                    converged.fetch_add(1, Ordering::Relaxed);
                } else if !complete && was_complete {
                    converged.fetch_sub(1, Ordering::Relaxed);
                }
                *last = (Some(ids), Some(Instant::now()), complete);
            })
            .await?;
            let payload = json!({ "id": id, "username": id }).to_string();
            conn.emit_ack_raw("user-joined", &payload, Duration::from_secs(120))
                .await?;
            anyhow::Ok((conn, client))
        }));
    }
    // A client that could not connect or register is counted, not fatal: a
    // storm past what the machine holds still reports how far it got.
    let mut clients = Vec::new();
    let mut failed = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(client)) => clients.push(client),
            Ok(Err(error)) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("storm: a client failed: {error:#}");
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    let registered_after = start.elapsed();
    let deadline = start + Duration::from_secs_f64(args.timeout);
    while failed == 0 && converged.load(Ordering::Relaxed) < args.users && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_converged_after = start.elapsed();
    // Nothing stale may come after: wait a second more and check every final list.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut stale = 0;
    let mut last_list_at = start;
    for (_conn, client) in &clients {
        if let Ok(last) = client.last.lock() {
            if !last.2 {
                stale += 1;
            }
            if let Some(at) = last.1 {
                last_list_at = last_list_at.max(at);
            }
        }
    }
    let converged = converged.load(Ordering::Relaxed);
    Ok(json!({
        "scenario": "storm",
        "gateways": args.gateways,
        "users": args.users,
        "all_registered_s": registered_after.as_secs_f64(),
        "failed_clients": failed,
        "converged_clients": converged,
        "converge_s": (converged == args.users).then_some(all_converged_after.as_secs_f64()),
        "last_users_list_s": last_list_at.duration_since(start).as_secs_f64(),
        "clients_on_a_stale_list": stale,
        "users_list_messages": lists.load(Ordering::Relaxed),
        "users_list_bytes": bytes.load(Ordering::Relaxed),
        "presence": args.presence,
        "presence_bytes": presence_bytes.load(Ordering::Relaxed),
        "presence_bytes_per_client": presence_bytes.load(Ordering::Relaxed) as f64 / args.users as f64,
    }))
}
