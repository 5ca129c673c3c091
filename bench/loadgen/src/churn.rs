//! The `calls` scenario: call churn. Each worker pairs two users and loops:
//! start a call, the peer joins, a few relays, both leave; latency of each step
//! (ack round trip) and completed calls per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::report::{histogram, record, summary};
use crate::sio::Conn;

#[derive(Debug, Clone, clap::Args)]
pub struct ChurnArgs {
    #[arg(long = "gateway", required = true)]
    pub gateways: Vec<String>,
    /// Concurrent workers (pairs of users).
    #[arg(long, default_value_t = 20)]
    pub workers: usize,
    /// Relays per call.
    #[arg(long, default_value_t = 3)]
    pub relays: usize,
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Calls started per second in all (spread over the workers, each on its
    /// own schedule); 0: each worker starts its next call as soon as the last
    /// one is done (the highest rate the system sustains).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

#[derive(Clone)]
struct Steps {
    start: Arc<Mutex<Histogram<u64>>>,
    join: Arc<Mutex<Histogram<u64>>>,
    relay: Arc<Mutex<Histogram<u64>>>,
    leave: Arc<Mutex<Histogram<u64>>>,
}

const ACK: Duration = Duration::from_secs(30);

async fn timed(
    h: &Mutex<Histogram<u64>>,
    conn: &Conn,
    event: &str,
    payload: Value,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let ack = conn.emit_ack_raw(event, &payload.to_string(), ACK).await?;
    record(&mut *h.lock().await, t.elapsed());
    anyhow::ensure!(ack.contains("\"ok\":true"), "{event} refused: {ack}");
    Ok(())
}

pub async fn run(args: &ChurnArgs) -> anyhow::Result<Value> {
    let run_id = format!("{:x}", std::process::id());
    let steps = Steps {
        start: Arc::new(Mutex::new(histogram())),
        join: Arc::new(Mutex::new(histogram())),
        relay: Arc::new(Mutex::new(histogram())),
        leave: Arc::new(Mutex::new(histogram())),
    };
    let duration = Duration::from_secs_f64(args.duration);
    let g = args.gateways.len();
    let mut tasks = Vec::new();
    for w in 0..args.workers {
        let (a_id, b_id) = (format!("ch-{run_id}-{w}a"), format!("ch-{run_id}-{w}b"));
        let a = Conn::connect(&args.gateways[w % g], |_, _| {}).await?;
        let b = Conn::connect(&args.gateways[(w + 1) % g], |_, _| {}).await?;
        for (conn, id) in [(&a, &a_id), (&b, &b_id)] {
            conn.emit_ack_raw(
                "user-joined",
                &json!({ "id": id, "username": id }).to_string(),
                ACK,
            )
            .await?;
        }
        let (steps, relays, run_id) = (steps.clone(), args.relays, run_id.clone());
        // A worker's calls are `workers / rate` apart, the workers staggered.
        let every = (args.rate > 0.0).then(|| args.workers as f64 / args.rate);
        let offset = every.map_or(0.0, |every| every * w as f64 / args.workers as f64);
        tasks.push(tokio::spawn(async move {
            let begin = Instant::now();
            let mut completed = 0u64;
            let mut errors = 0u64;
            let mut n = 0u64;
            while begin.elapsed() < duration {
                if let Some(every) = every {
                    let at = begin + Duration::from_secs_f64(offset + every * n as f64);
                    if at >= begin + duration {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    n += 1;
                }
                let call = format!("ch-{run_id}-{w}-{completed}-{errors}");
                let cycle = async {
                    // Full identities, as a real frontend sends (the original needs them).
                    let (a_user, b_user) = (json!({ "id": a_id, "username": a_id }), json!({ "id": b_id, "username": b_id }));
                    let start = json!({ "id": call, "initiator": a_user, "participants": [b_user], "isVideo": true });
                    timed(&steps.start, &a, "start-call", start).await?;
                    timed(&steps.join, &b, "join-call", json!({ "callId": call, "user": b_user })).await?;
                    for n in 0..relays {
                        let relay = json!({ "callId": call, "targetUserId": b_id, "candidate": { "n": n } });
                        timed(&steps.relay, &a, "webrtc-ice-candidate", relay).await?;
                    }
                    timed(&steps.leave, &b, "leave-call", json!({ "callId": call, "userId": b_id })).await?;
                    timed(&steps.leave, &a, "leave-call", json!({ "callId": call, "userId": a_id })).await?;
                    anyhow::Ok(())
                };
                match cycle.await {
                    Ok(()) => completed += 1,
                    Err(_) => errors += 1,
                }
            }
            (completed, errors, a, b)
        }));
    }
    let mut completed = 0;
    let mut errors = 0;
    for task in tasks {
        let (c, e, _, _) = task.await?;
        completed += c;
        errors += e;
    }
    Ok(json!({
        "scenario": "calls",
        "gateways": args.gateways,
        "workers": args.workers,
        "relays_per_call": args.relays,
        "duration_s": args.duration,
        "offered_calls_per_s": (args.rate > 0.0).then_some(args.rate),
        "calls_completed": completed,
        "calls_per_s": completed as f64 / args.duration,
        "errors": errors,
        "start_call": summary(&*steps.start.lock().await),
        "join_call": summary(&*steps.join.lock().await),
        "relay": summary(&*steps.relay.lock().await),
        "leave_call": summary(&*steps.leave.lock().await),
    }))
}
