//! The `meetup-history` binary end to end: call snapshots put into a JetStream
//! KV bucket (as the call service will) reach PostgreSQL through the durable
//! consumer, across a SIGKILL of the service, none missing and none
//! duplicated; then the gRPC API (token, errors with their reason, pages,
//! missed calls, deletion) and an orderly stop on SIGTERM.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream;
use meetup_history::source::wire;
use meetup_history::{CallSnapshot, HistoryStore, Outcome};
use meetup_proto::history::v1 as pb;
use meetup_proto::history::v1::history_service_client::HistoryServiceClient;
use meetup_tests::postgres::PostgresServer;
use meetup_tests::{NatsServer, Process, bin_path, listening_addrs, wait_grpc_health};
use prost::Message;

const CALLS: usize = 300;
const TOKEN: &str = "history-test-token";
const SERVICE: &str = "meetup.history.v1.HistoryService";

struct HistoryProcess {
    process: Process,
    addr: SocketAddr,
}

async fn start_history(nats_url: &str, db_url: &str) -> anyhow::Result<HistoryProcess> {
    let env = [
        ("HISTORY_LISTEN", "127.0.0.1:0".to_owned()),
        ("METRICS_LISTEN", "127.0.0.1:0".to_owned()),
        ("HISTORY_DATABASE_URL", db_url.to_owned()),
        ("NATS_URL", nats_url.to_owned()),
        ("HISTORY_ACK_WAIT_SECS", "1".to_owned()),
        // The records are from 2023: no retention, or pruning would race the
        // ingest this test counts (retention has its own tests).
        ("HISTORY_RETENTION_DAYS", "0".to_owned()),
        ("INTERNAL_API_TOKEN", TOKEN.to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let process = Process::spawn("history", &bin_path("meetup-history")?, &[], &env)?;
    let addr = listening_addrs(&process, &["history"]).await?["history"];
    wait_grpc_health(&format!("http://{addr}"), SERVICE).await?;
    Ok(HistoryProcess { process, addr })
}

fn ts(ms: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

fn user(id: String) -> Option<wire::CallUser> {
    Some(wire::CallUser {
        username: format!("name-{id}"),
        id,
    })
}

const T0: i64 = 1_700_000_000_000;

/// Revision `version` (1 to 3) of call `n`: invitees ringing, then b answers,
/// then the call ends with c missed (or declined, for odd calls).
fn revision(n: usize, version: u64) -> wire::CallRecord {
    let created = T0 + n as i64 * 1000;
    let attendee =
        |id: String, joined: Option<i64>, left: Option<i64>, outcome: i32| wire::Attendee {
            user: user(id),
            invited_at: ts(created),
            joined_at: joined.and_then(ts),
            left_at: left.and_then(ts),
            outcome,
            ..Default::default()
        };
    let b = format!("b{}", n % 7);
    let c = format!("c{}", n % 3);
    let attendees = match version {
        1 => vec![attendee(b, None, None, 1), attendee(c, None, None, 1)],
        2 => vec![
            attendee(b, Some(created + 100), None, 2),
            attendee(c, None, None, 1),
        ],
        _ => vec![
            attendee(b, Some(created + 100), Some(created + 900), 2),
            attendee(c, None, None, if n.is_multiple_of(2) { 4 } else { 3 }),
        ],
    };
    wire::CallRecord {
        call: Some(wire::Call {
            id: format!("call-{n:04}"),
            initiator: user(format!("a{}", n % 5)),
            is_video: n.is_multiple_of(2),
            created_at: ts(created),
            version,
            ended_at: if version == 3 {
                ts(created + 900)
            } else {
                None
            },
            attendees,
            ..Default::default()
        }),
        change: None,
        traceparent: String::new(),
    }
}

fn expected(n: usize) -> anyhow::Result<CallSnapshot> {
    meetup_history::source::decode_call_record(&revision(n, 3).encode_to_vec())?
        .context("a snapshot")
}

async fn put_round(kv: &jetstream::kv::Store, version: u64) -> anyhow::Result<()> {
    for n in 0..CALLS {
        kv.put(
            format!("c.call-{n:04}"),
            revision(n, version).encode_to_vec().into(),
        )
        .await?;
    }
    Ok(())
}

/// Waits until the durable consumer has nothing pending or unacknowledged.
async fn wait_drained(js: &jetstream::Context, history: &HistoryProcess) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stream = js.get_stream("KV_meetup_calls").await?;
        if let Ok(info) = stream.consumer_info("meetup-history").await
            && info.num_pending == 0
            && info.num_ack_pending == 0
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the consumer never caught up\n{}", history.process.output());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn snapshots_survive_a_sigkill_of_the_service() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let pg = PostgresServer::start().await?;
    let db_url = pg.url("meetup");
    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client);
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "meetup_calls".into(),
            history: 1,
            ..Default::default()
        })
        .await?;
    let store = HistoryStore::connect(&db_url).await?;

    let mut history = start_history(&nats.url(), &db_url).await?;
    put_round(&kv, 1).await?;
    put_round(&kv, 2).await?;
    // Killed while records flow: some written, the rest not yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.count_calls().await? < 10 {
        if Instant::now() >= deadline {
            bail!("nothing ingested\n{}", history.process.output());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    history.process.signal("KILL")?;
    history.process.wait_exit(Duration::from_secs(5)).await?;
    let at_kill = store.count_calls().await?;
    eprintln!("{at_kill} of {CALLS} calls recorded at the kill");
    // The calls end while the service is down.
    put_round(&kv, 3).await?;

    let history = start_history(&nats.url(), &db_url).await?;
    wait_drained(&js, &history).await?;
    assert_eq!(
        store.count_calls().await?,
        CALLS as u64,
        "every call recorded once (had {at_kill} at the kill)"
    );
    for n in 0..CALLS {
        let want = expected(n)?;
        let got = store.get_call(&want.call_id).await?;
        assert_eq!(got, want, "call {n}");
    }
    // Each user's history lists each of their calls exactly once.
    for user in (0..5).map(|i| format!("a{i}")) {
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let page = store.list_user_calls(&user, 100, token.as_deref()).await?;
            seen.extend(page.calls.into_iter().map(|c| c.call_id));
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(seen.len(), unique.len(), "{user}: no duplicates");
        assert_eq!(
            seen.len(),
            (0..CALLS)
                .filter(|n| n % 5 == user[1..].parse::<usize>().unwrap_or(9))
                .count()
        );
    }

    grpc_api(&history, &store).await?;

    let mut history = history;
    history.process.signal("TERM")?;
    let status = history.process.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    store.close().await;
    Ok(())
}

async fn grpc_api(history: &HistoryProcess, store: &HistoryStore) -> anyhow::Result<()> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", history.addr))?
        .connect()
        .await?;
    let mut anonymous = HistoryServiceClient::new(channel.clone());
    let refused = anonymous
        .get_call_record(pb::GetCallRecordRequest {
            call_id: "call-0000".into(),
        })
        .await
        .err()
        .context("no token, no answer")?;
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let bearer = meetup_platform_bearer()?;
    let mut client = HistoryServiceClient::with_interceptor(channel, bearer);

    let record = client
        .get_call_record(pb::GetCallRecordRequest {
            call_id: "call-0002".into(),
        })
        .await?
        .into_inner()
        .call
        .context("a record")?;
    assert_eq!(record.attendees.len(), 2);
    assert_eq!(record.attendees[1].outcome, pb::Outcome::Missed as i32);

    let missing = client
        .get_call_record(pb::GetCallRecordRequest {
            call_id: "nope".into(),
        })
        .await
        .err()
        .context("not found")?;
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(
        missing
            .metadata()
            .get("meetup-reason")
            .and_then(|v| v.to_str().ok()),
        Some("call-not-found")
    );
    let bad = client
        .list_user_calls(pb::ListUserCallsRequest {
            user_id: "a0".into(),
            page_size: 5,
            page_token: "garbage!".into(),
        })
        .await
        .err()
        .context("bad token refused")?;
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        bad.metadata()
            .get("meetup-reason")
            .and_then(|v| v.to_str().ok()),
        Some("invalid-page-token")
    );
    let empty_id = client
        .list_user_calls(pb::ListUserCallsRequest::default())
        .await
        .err()
        .context("empty id refused")?;
    assert_eq!(empty_id.code(), tonic::Code::InvalidArgument);

    // Pages of a0's calls, newest first, through the API.
    let first = client
        .list_user_calls(pb::ListUserCallsRequest {
            user_id: "a0".into(),
            page_size: 5,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    let first_ids: Vec<&str> = first.calls.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(
        first_ids,
        [
            "call-0295",
            "call-0290",
            "call-0285",
            "call-0280",
            "call-0275"
        ]
    );
    let second = client
        .list_user_calls(pb::ListUserCallsRequest {
            user_id: "a0".into(),
            page_size: 5,
            page_token: first.next_page_token,
        })
        .await?
        .into_inner();
    assert_eq!(second.calls[0].call_id, "call-0270");

    // c0 missed every even call n with n % 3 == 0; the mark hides them once seen.
    let missed = client
        .list_missed_calls(pb::ListMissedCallsRequest {
            user_id: "c0".into(),
            since: None,
            limit: 3,
        })
        .await?
        .into_inner();
    let want = (0..CALLS).filter(|n| n.is_multiple_of(6)).count() as u64;
    assert_eq!((missed.count, missed.calls.len()), (want, 3));
    client
        .mark_missed_calls_seen(pb::MarkMissedCallsSeenRequest {
            user_id: "c0".into(),
            seen_until: missed.newest,
        })
        .await?;
    let after = client
        .list_missed_calls(pb::ListMissedCallsRequest {
            user_id: "c0".into(),
            since: None,
            limit: 3,
        })
        .await?
        .into_inner();
    assert_eq!(after.count, 0);

    let deleted = client
        .delete_user_history(pb::DeleteUserHistoryRequest {
            user_id: "c0".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        deleted.attendee_rows,
        (0..CALLS).filter(|n| n.is_multiple_of(3)).count() as u64
    );
    assert!(
        store
            .list_user_calls("c0", 10, None)
            .await?
            .calls
            .is_empty()
    );
    let record = store.get_call("call-0000").await?;
    assert!(record.attendee("c0").is_none());
    assert_eq!(
        record.attendee("b0").map(|a| a.outcome),
        Some(Outcome::Answered)
    );
    Ok(())
}

fn meetup_platform_bearer() -> anyhow::Result<Bearer> {
    Ok(Bearer(format!("Bearer {TOKEN}").parse()?))
}

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}
