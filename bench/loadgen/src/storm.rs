//! The `storm` scenario: N users connect and register at once; the time until
//! every client holds a `users-list` of exactly all N users, and how many
//! `users-list` messages and bytes that took.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sio::Conn;

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
}

struct Client {
    /// The last users-list received (as ids), and when.
    last: Mutex<(Option<HashSet<String>>, Option<Instant>)>,
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
    let converged = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let gateway = args.gateways[i % args.gateways.len()].clone();
        let (id, expected, lists, bytes, converged) = (
            id.clone(),
            expected.clone(),
            lists.clone(),
            bytes.clone(),
            converged.clone(),
        );
        let prefix = format!("st-{run_id}-");
        tasks.push(tokio::spawn(async move {
            let client = Arc::new(Client {
                last: Mutex::new((None, None)),
            });
            let seen = client.clone();
            let conn = Conn::connect(&gateway, move |event, data| {
                if event != "users-list" {
                    return;
                }
                lists.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                // Only the ids: the other fields are skipped unparsed.
                #[derive(serde::Deserialize)]
                struct Listed {
                    id: String,
                }
                let ids: HashSet<String> = serde_json::from_str::<Vec<Listed>>(data)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|u| u.id)
                    .filter(|id| id.starts_with(&prefix))
                    .collect();
                let complete = ids == *expected;
                if let Ok(mut last) = seen.last.lock() {
                    let was_complete = last.0.as_ref().is_some_and(|l| *l == *expected);
                    if complete && !was_complete {
                        converged.fetch_add(1, Ordering::Relaxed);
                    } else if !complete && was_complete {
                        converged.fetch_sub(1, Ordering::Relaxed);
                    }
                    *last = (Some(ids), Some(Instant::now()));
                }
            })
            .await?;
            let payload = json!({ "id": id, "username": id }).to_string();
            conn.emit_ack_raw("user-joined", &payload, Duration::from_secs(120))
                .await?;
            anyhow::Ok((conn, client))
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await??);
    }
    let registered_after = start.elapsed();
    let deadline = start + Duration::from_secs_f64(args.timeout);
    while converged.load(Ordering::Relaxed) < args.users && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let all_converged_after = start.elapsed();
    // Nothing stale may come after: wait a second more and check every final list.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut stale = 0;
    let mut last_list_at = start;
    for (_conn, client) in &clients {
        if let Ok(last) = client.last.lock() {
            if !last.0.as_ref().is_some_and(|l| *l == *expected) {
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
        "converged_clients": converged,
        "converge_s": (converged == args.users).then_some(all_converged_after.as_secs_f64()),
        "last_users_list_s": last_list_at.duration_since(start).as_secs_f64(),
        "clients_on_a_stale_list": stale,
        "users_list_messages": lists.load(Ordering::Relaxed),
        "users_list_bytes": bytes.load(Ordering::Relaxed),
    }))
}
