//! The `presence` and `calls-grpc` scenarios: RPC load straight at one service,
//! open loop at a fixed rate, latency from each call's intended start.

use std::collections::BTreeMap;
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
    /// The service's gRPC address, e.g. http://127.0.0.1:50051.
    #[arg(long)]
    pub url: String,
    /// RPCs per second offered.
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// HTTP/2 connections to spread the calls over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
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
        joined_at: None,
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
                    })
                    .await
                    .map(drop),
                1 => client
                    .get_user(GetUserRequest { user_id: user })
                    .await
                    .map(drop),
                2 if n.is_multiple_of(25) => client.list_users(ListUsersRequest {}).await.map(drop),
                2 => client
                    .get_user(GetUserRequest { user_id: user })
                    .await
                    .map(drop),
                _ => client
                    .unregister_session(UnregisterSessionRequest {
                        session_id: session,
                        user_id: user,
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

pub async fn run(target: Target, args: &GrpcArgs) -> anyhow::Result<Value> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            Endpoint::from_shared(args.url.clone())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
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
        let (channel, outcome, run) = (
            channels[n as usize % channels.len()].clone(),
            outcome.clone(),
            run.clone(),
        );
        in_flight.push(tokio::spawn(async move {
            // The first RPC is timed from the group's intended start, the others
            // from when the one before it returned.
            let mut from = tick;
            for step in 0..per_group {
                let result = call(target, channel.clone(), &run, n, step).await;
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
        "url": args.url,
        "offered_per_s": k as f64 / args.duration,
        "completed_ok_per_s": ok as f64 / args.duration,
        "answered_per_s": (k - failed) as f64 / args.duration,
        "failed": failed,
        "calls": k,
        "outcomes": codes,
        "latency": latency,
    }))
}
