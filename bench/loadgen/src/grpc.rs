//! The `presence` and `calls-grpc` scenarios: RPC load straight at a service (one
//! or several replicas of it), open loop at a fixed rate, latency from each call's
//! intended start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use meetup_proto::calls::v1::call_service_client::CallServiceClient;
use meetup_proto::calls::v1::{
    CallUser, GetCallRequest, JoinCallRequest, LeaveCallRequest, Participant, StartCallRequest,
};
use meetup_proto::presence::v1::presence_service_client::PresenceServiceClient;
use meetup_proto::presence::v1::{
    GetUserRequest, ListUsersRequest, RegisterSessionRequest, UnregisterSessionRequest,
};
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

use crate::report::{self, histogram, record, summary};

#[derive(Debug, Clone, clap::Args)]
pub struct GrpcArgs {
    /// The service's gRPC address, e.g. http://127.0.0.1:50051. Repeat it (or
    /// separate with commas) to spread the RPCs over several replicas.
    #[arg(long = "url", required = true, value_delimiter = ',')]
    pub urls: Vec<String>,
    /// RPCs per second offered.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// HTTP/2 connections in all, spread over the addresses (at least one
    /// each). The total, not the count per address, so that runs against one
    /// replica and against two differ only in the replicas: at low rates the
    /// latency depends on how the RPCs land on connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Presence only: every Nth group's third RPC is a `ListUsers` (a scan of
    /// every online user) instead of a `GetUser`; 0 never lists.
    #[arg(long, default_value_t = 25)]
    pub list_every: u64,
    /// Deadline of each RPC, in milliseconds (as the gateway's `RPC_TIMEOUT_MS`):
    /// an overloaded service shows as `DeadlineExceeded`, and the run stays bounded.
    #[arg(long, default_value_t = 5000)]
    pub rpc_timeout_ms: u64,
}

#[derive(Clone, Copy, Debug)]
pub enum Target {
    Presence,
    Calls,
}

struct Outcome {
    latency: Mutex<Histogram<u64>>,
    codes: Mutex<BTreeMap<String, u64>>,
}

fn participant(user: &str, session: &str) -> Participant {
    Participant {
        user: Some(CallUser {
            id: user.to_owned(),
            username: user.to_owned(),
        }),
        session_id: session.to_owned(),
        gateway_id: "loadgen".to_owned(),
        ..Default::default()
    }
}

/// RPCs in one group of the mix.
fn group_size(target: Target) -> u64 {
    match target {
        Target::Presence => 4,
        Target::Calls => 5,
    }
}

/// RPC `step` of group `n`: the steps of a group run one after the other (a
/// session registers before it is looked up, a call starts before it is joined),
/// and groups start open loop.
async fn call(
    target: Target,
    channel: Channel,
    run: &str,
    n: u64,
    step: u64,
    list_every: u64,
) -> Result<(), tonic::Status> {
    match target {
        Target::Presence => {
            let mut client =
                PresenceServiceClient::new(channel).max_decoding_message_size(256 << 20);
            let (user, session) = (format!("{run}-u{n}"), format!("{run}-s{n}"));
            match step {
                0 => client
                    .register_session(RegisterSessionRequest {
                        user_id: user.clone(),
                        username: user,
                        gateway_id: "loadgen".into(),
                        session_id: session,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                1 => client
                    .get_user(GetUserRequest { user_id: user })
                    .await
                    .map(drop),
                2 if list_every > 0 && n.is_multiple_of(list_every) => {
                    client.list_users(ListUsersRequest {}).await.map(drop)
                }
                2 => client
                    .get_user(GetUserRequest { user_id: user })
                    .await
                    .map(drop),
                _ => client
                    .unregister_session(UnregisterSessionRequest {
                        session_id: session,
                        user_id: user,
                        keep_away: false,
                    })
                    .await
                    .map(drop),
            }
        }
        Target::Calls => {
            let mut client = CallServiceClient::new(channel).max_decoding_message_size(256 << 20);
            let (call_id, a, b) = (
                format!("{run}-c{n}"),
                format!("{run}-a{n}"),
                format!("{run}-b{n}"),
            );
            match step {
                0 => client
                    .start_call(StartCallRequest {
                        call_id,
                        initiator: Some(participant(&a, &a)),
                        is_video: true,
                        invited_user_ids: vec![b],
                    })
                    .await
                    .map(drop),
                1 => client
                    .join_call(JoinCallRequest {
                        call_id,
                        participant: Some(participant(&b, &b)),
                    })
                    .await
                    .map(drop),
                2 => client.get_call(GetCallRequest { call_id }).await.map(drop),
                3 => client
                    .leave_call(LeaveCallRequest {
                        call_id,
                        session_id: b,
                    })
                    .await
                    .map(drop),
                _ => client
                    .leave_call(LeaveCallRequest {
                        call_id,
                        session_id: a,
                    })
                    .await
                    .map(drop),
            }
        }
    }
}

/// `connections` channels in all (at least one per address), taking the
/// addresses in turn (0, 1, ..., 0, 1, ...) so that consecutive RPCs go to
/// different addresses.
async fn connect(
    urls: &[String],
    connections: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<(usize, Channel)>> {
    anyhow::ensure!(!urls.is_empty(), "at least one --url");
    let mut channels = Vec::new();
    for i in 0..connections.max(urls.len()) {
        let index = i % urls.len();
        let url = &urls[index];
        let channel = Endpoint::from_shared(url.clone())?
            .tcp_nodelay(true)
            .timeout(timeout)
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {url}: {e}"))?;
        channels.push((index, channel));
    }
    Ok(channels)
}

pub async fn run(target: Target, args: &GrpcArgs) -> anyhow::Result<Value> {
    let channels = Arc::new(
        connect(
            &args.urls,
            args.connections,
            Duration::from_millis(args.rpc_timeout_ms.max(1)),
        )
        .await?,
    );
    let per_url: Arc<Vec<AtomicU64>> =
        Arc::new(args.urls.iter().map(|_| AtomicU64::new(0)).collect());
    let run = format!("lg{:x}", std::process::id());
    let outcome = Arc::new(Outcome {
        latency: Mutex::new(histogram()),
        codes: Mutex::new(BTreeMap::new()),
    });
    let duration = Duration::from_secs_f64(args.duration);
    // Groups start at rate / group size, so that RPCs go out at `rate`.
    let per_group = group_size(target);
    let period = Duration::from_secs_f64(per_group as f64 / args.rate);
    let start = Instant::now() + Duration::from_millis(100);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::from_std(start), period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut k = 0u64;
    let mut in_flight = Vec::new();
    let mut last_progress = Instant::now();
    loop {
        let tick = ticks.tick().await.into_std();
        if tick.duration_since(start) >= duration {
            break;
        }
        let n = k / per_group;
        let (channels, per_url, outcome, run) = (
            channels.clone(),
            per_url.clone(),
            outcome.clone(),
            run.clone(),
        );
        let list_every = args.list_every;
        in_flight.push(tokio::spawn(async move {
            // The first RPC is timed from the group's intended start, the others
            // from when the one before it returned. Each RPC takes the next
            // channel, as a balancing gateway would: the steps of one group meet
            // on different replicas, over the shared state.
            let mut from = tick;
            for step in 0..per_group {
                let (url, channel) = &channels[((k + step) % channels.len() as u64) as usize];
                per_url[*url].fetch_add(1, Ordering::Relaxed);
                let result = call(target, channel.clone(), &run, n, step, list_every).await;
                if let Ok(mut h) = outcome.latency.lock() {
                    record(&mut h, from.elapsed());
                }
                from = Instant::now();
                let code = match result {
                    Ok(()) => "ok".to_owned(),
                    Err(status) => format!("{:?}", status.code()),
                };
                if let Ok(mut codes) = outcome.codes.lock() {
                    *codes.entry(code).or_default() += 1;
                }
            }
        }));
        k += per_group;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            in_flight.retain(|t| !t.is_finished());
            report::progress(
                "rpc",
                tick.duration_since(start),
                duration,
                &format!("issued {k}"),
            );
        }
    }
    for task in in_flight {
        let _ = task.await;
    }
    let latency = outcome
        .latency
        .lock()
        .map(|h| summary(&h))
        .unwrap_or(Value::Null);
    let codes = outcome.codes.lock().map(|c| c.clone()).unwrap_or_default();
    let ok = codes.get("ok").copied().unwrap_or(0);
    // Answered by the service (a NotFound for a lookup that raced its register is
    // an answer); transport failures, overload and timeouts are not.
    let failed: u64 = [
        "Unknown",
        "Unavailable",
        "Cancelled",
        "DeadlineExceeded",
        "ResourceExhausted",
        "Internal",
    ]
    .iter()
    .filter_map(|code| codes.get(*code))
    .sum();
    Ok(json!({
        "scenario": match target { Target::Presence => "presence", Target::Calls => "calls-grpc" },
        "urls": args.urls,
        "calls_per_url": per_url.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "connections": channels.len(),
        "rpc_timeout_ms": args.rpc_timeout_ms,
        "list_every": match target { Target::Presence => json!(args.list_every), Target::Calls => Value::Null },
        "offered_per_s": k as f64 / args.duration,
        "completed_ok_per_s": ok as f64 / args.duration,
        "answered_per_s": (k - failed) as f64 / args.duration,
        "failed": failed,
        "calls": k,
        "outcomes": codes,
        "latency": latency,
    }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::GrpcArgs;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: GrpcArgs,
    }

    #[test]
    fn addresses_repeat_or_come_comma_separated() {
        let cli = Cli::try_parse_from([
            "lg",
            "--url",
            "http://a:1,http://b:2",
            "--url",
            "http://c:3",
            "--list-every",
            "0",
        ])
        .map_err(|e| e.to_string());
        let args = cli.map(|c| c.args);
        assert_eq!(
            args.as_ref().map(|a| a.urls.clone()),
            Ok(vec![
                "http://a:1".to_owned(),
                "http://b:2".to_owned(),
                "http://c:3".to_owned()
            ])
        );
        assert_eq!(args.map(|a| a.list_every), Ok(0));
    }

    #[test]
    fn an_address_is_required() {
        assert!(Cli::try_parse_from(["lg", "--rate", "10"]).is_err());
    }
}
