//! Call history for browsers: `get-call-history` (the registered user's own
//! calls, never anybody else's) and the `missed-calls` event after `user-joined`.
//! The records come from the history service (`HISTORY_URL`) or, in the embedded
//! mode, from an in-process store (`HISTORY_DATABASE_URL`, SQLite by default).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meetup_history::{CallPage, CallSnapshot, HistoryError, HistoryStore, Millis, MissedCalls};
use meetup_proto::history::v1 as pb;
use meetup_proto::history::v1::history_service_client::HistoryServiceClient;
use meetup_runtime::grpc::AttachBearer;
use serde_json::{Value, json};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use futures::{FutureExt, StreamExt};
use meetup_runtime::store::{Bucket, StateStore, Watched};

use crate::config::Config;
use crate::protocol::ServerEvent;
use crate::protocol::ack::{Ack, AckError, ErrorCode};
use crate::protocol::inbound::HistoryQuery;
use crate::state::Gateway;

pub type HistoryClient = HistoryServiceClient<InterceptedService<Channel, AttachBearer>>;

/// Most missed calls listed in one `missed-calls` event (`count` has them all).
pub const MISSED_CALLS_LISTED: u32 = 20;
/// Longest a registration waits for the missed calls.
pub const MISSED_CALLS_WAIT: Duration = Duration::from_secs(2);

/// Where the records are: a cheap-to-clone handle.
#[derive(Clone, Debug)]
pub enum History {
    /// In this process (embedded mode), fed by the watch of the calls bucket
    /// (the task, aborted on [`History::stop`]).
    Local(HistoryStore, std::sync::Arc<tokio::task::AbortHandle>),
    /// The history service.
    Remote(HistoryClient),
}

impl History {
    /// The history service at `HISTORY_URL`, else an in-process store on
    /// `HISTORY_DATABASE_URL`, fed from `state`'s calls bucket.
    pub async fn start(config: &Config, state: &StateStore) -> anyhow::Result<Self> {
        match &config.history_url {
            Some(url) => {
                let channel = Endpoint::from_shared(url.clone())
                    .with_context(|| format!("invalid HISTORY_URL {url:?}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(config.rpc_timeout())
                    .tcp_nodelay(true)
                    .connect_lazy();
                let bearer = AttachBearer::new(config.internal_api_token.clone())?;
                Ok(History::Remote(HistoryServiceClient::with_interceptor(
                    channel, bearer,
                )))
            }
            None => {
                if config.nats_url.is_some() {
                    tracing::warn!(
                        "HISTORY_URL is not set: this gateway keeps its own call history; set it in a cluster"
                    );
                }
                let store = HistoryStore::connect(&config.history_database_url)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot open the call history at HISTORY_DATABASE_URL={}",
                            config.history_database_url
                        )
                    })?;
                tracing::info!(backend = ?store.backend(), "in-process call history ready");
                let ingest = tokio::spawn(ingest(store.clone(), state.calls.clone()));
                Ok(History::Local(
                    store,
                    std::sync::Arc::new(ingest.abort_handle()),
                ))
            }
        }
    }

    /// One page of `user_id`'s calls, newest first.
    pub async fn page(
        &self,
        user_id: &str,
        limit: u32,
        before: Option<&str>,
    ) -> Result<CallPage, AckError> {
        match self {
            History::Local(store, _) => store
                .list_user_calls(user_id, limit, before)
                .await
                .map_err(local_error),
            History::Remote(client) => {
                let response = client
                    .clone()
                    .list_user_calls(pb::ListUserCallsRequest {
                        user_id: user_id.to_owned(),
                        page_size: limit,
                        page_token: before.unwrap_or_default().to_owned(),
                    })
                    .await
                    .map_err(|status| AckError::from_status(&status, "list user calls"))?
                    .into_inner();
                Ok(CallPage {
                    calls: from_wire(response.calls)?,
                    next: Some(response.next_page_token).filter(|t| !t.is_empty()),
                })
            }
        }
    }

    /// `user_id`'s missed calls not seen yet (since their mark).
    pub async fn unseen_missed(&self, user_id: &str) -> Result<MissedCalls, AckError> {
        match self {
            History::Local(store, _) => {
                let since = store
                    .seen_until(user_id)
                    .await
                    .map_err(local_error)?
                    .unwrap_or(0);
                store
                    .missed_calls(user_id, since, MISSED_CALLS_LISTED)
                    .await
                    .map_err(local_error)
            }
            History::Remote(client) => {
                let response = client
                    .clone()
                    .list_missed_calls(pb::ListMissedCallsRequest {
                        user_id: user_id.to_owned(),
                        since: None,
                        limit: MISSED_CALLS_LISTED,
                    })
                    .await
                    .map_err(|status| AckError::from_status(&status, "list missed calls"))?
                    .into_inner();
                Ok(MissedCalls {
                    count: response.count,
                    calls: from_wire(response.calls)?,
                    newest: response
                        .newest
                        .as_ref()
                        .map(meetup_history::service::ms_from_timestamp),
                })
            }
        }
    }

    /// Missed calls of `user_id` that started up to `until` are not reported again.
    pub async fn mark_seen(&self, user_id: &str, until: Millis) -> Result<(), AckError> {
        match self {
            History::Local(store, _) => store.mark_seen(user_id, until).await.map_err(local_error),
            History::Remote(client) => client
                .clone()
                .mark_missed_calls_seen(pb::MarkMissedCallsSeenRequest {
                    user_id: user_id.to_owned(),
                    seen_until: Some(meetup_history::service::timestamp_from_ms(until)),
                })
                .await
                .map(|_| ())
                .map_err(|status| AckError::from_status(&status, "mark missed calls seen")),
        }
    }

    /// Closes the in-process store, if any.
    pub async fn stop(&self) {
        if let History::Local(store, ingest) = self {
            ingest.abort();
            store.close().await;
        }
    }
}

/// Changes the history takes from the watch at most at once.
const INGEST_BATCH: usize = 512;

/// Feeds the in-process history: every revision of every call's key, from the
/// watch of the calls bucket (its snapshot first, so a restart catches up with
/// the records still in the bucket). Applying is idempotent: an old or repeated
/// version changes nothing.
async fn ingest(store: HistoryStore, calls: Bucket) {
    loop {
        let mut watch = match calls.watch().await {
            Ok(watch) => watch,
            Err(error) => {
                tracing::warn!(%error, "history cannot watch the calls; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // What the watch has already delivered is taken at once, and only the
        // newest snapshot of each call is written: a call's start, joins,
        // leaves and end often arrive together, and the last says it all.
        let mut lost = false;
        while let Some(first) = watch.next().await {
            let mut newest: HashMap<String, CallSnapshot> = HashMap::new();
            let mut item = Some(first);
            let mut taken = 0;
            while let Some(next) = item.take() {
                match next {
                    Ok(Watched::Entry(entry)) => {
                        if let Some(value) = entry.value {
                            match meetup_history::source::decode_call_record(&value) {
                                Ok(Some(snapshot)) => {
                                    let keep = newest
                                        .get(&snapshot.call_id)
                                        .is_none_or(|kept| kept.version < snapshot.version);
                                    if keep {
                                        newest.insert(snapshot.call_id.clone(), snapshot);
                                    }
                                }
                                Ok(None) => {}
                                Err(error) => tracing::warn!(%error, "undecodable call record"),
                            }
                        }
                    }
                    Ok(Watched::Current) => {}
                    Err(error) => {
                        tracing::warn!(%error, "history lost the calls watch; watching again");
                        lost = true;
                        break;
                    }
                }
                taken += 1;
                if taken < INGEST_BATCH {
                    item = watch.next().now_or_never().flatten();
                }
            }
            for snapshot in newest.into_values() {
                if let Err(error) = store.apply(&snapshot).await {
                    tracing::warn!(%error, call_id = %snapshot.call_id, "call not recorded in the history");
                }
            }
            if lost {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `get-call-history`: a page of the registered user's own calls. The user is
/// the socket's identity, whatever the payload says.
pub async fn get_call_history(
    history: &History,
    user_id: &str,
    query: HistoryQuery,
) -> Result<Ack, AckError> {
    let page = history
        .page(user_id, query.limit, query.before.as_deref())
        .await?;
    let calls: Vec<Value> = page.calls.iter().map(|c| call_json(c, user_id)).collect();
    Ok(Ack::History {
        calls,
        next: page.next,
    })
}

/// After a successful `user-joined`: sends `missed-calls` when the user missed
/// calls since they last saw them, then moves their mark so that the same calls
/// are not reported again. Sent before the `user-joined` acknowledgement (as
/// `ice-servers` is), so a client that waits for the ack has it already. Bounded
/// by [`MISSED_CALLS_WAIT`]: registration never waits long on the history, and
/// when the history is unavailable the calls come at the next registration.
pub async fn send_missed_calls(gw: &Gateway, session_id: &str, user_id: &str) {
    let history = gw.history();
    let missed = match tokio::time::timeout(MISSED_CALLS_WAIT, history.unseen_missed(user_id)).await
    {
        Ok(Ok(missed)) => missed,
        Ok(Err(error)) => {
            tracing::debug!(%user_id, code = %error.code, "missed calls not checked");
            return;
        }
        Err(_) => {
            tracing::warn!(%user_id, "missed calls not checked in time");
            return;
        }
    };
    let Some(newest) = missed.newest.filter(|_| missed.count > 0) else {
        return;
    };
    let calls: Vec<Value> = missed.calls.iter().map(|c| call_json(c, user_id)).collect();
    let event = ServerEvent::MissedCalls {
        count: missed.count,
        calls,
    };
    if !gw.send(session_id, &event) {
        tracing::debug!(%user_id, "missed-calls not sent");
        return;
    }
    if let Err(error) = history.mark_seen(user_id, newest).await {
        tracing::warn!(%user_id, code = %error.code, "missed calls not marked as seen");
    }
}

/// The user's last session ended: the missed calls up to now count as seen.
pub async fn session_ended(history: &History, user_id: &str) {
    if let Err(error) = history.mark_seen(user_id, now_ms()).await {
        tracing::debug!(%user_id, code = %error.code, "history mark not moved");
    }
}

/// A call as browsers see it, from `me`'s side.
pub fn call_json(call: &CallSnapshot, me: &str) -> Value {
    let attendees: Vec<Value> = call
        .attendees
        .iter()
        .map(|a| {
            json!({
                "id": a.user.id,
                "username": a.user.username,
                "invitedAt": a.invited_at.map(iso),
                "joinedAt": a.joined_at.map(iso),
                "leftAt": a.left_at.map(iso),
                "outcome": a.outcome.as_str(),
            })
        })
        .collect();
    let outgoing = call.initiator.id == me;
    json!({
        "callId": call.call_id,
        "isVideo": call.is_video,
        "startedAt": iso(call.created_at),
        "endedAt": call.ended_at.map(iso),
        "initiator": { "id": call.initiator.id, "username": call.initiator.username },
        "direction": if outgoing { "outgoing" } else { "incoming" },
        // The user's own outcome; none for the calls they started.
        "outcome": call.attendee(me).filter(|_| !outgoing).map(|a| a.outcome.as_str()),
        "attendees": attendees,
    })
}

fn iso(ms: Millis) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(time).to_string()
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_wire(calls: Vec<pb::CallRecord>) -> Result<Vec<CallSnapshot>, AckError> {
    calls
        .into_iter()
        .map(CallSnapshot::try_from)
        .collect::<Result<_, _>>()
        .map_err(local_error)
}

/// The in-process store's failures as client errors; causes are logged only.
fn local_error(error: HistoryError) -> AckError {
    match error {
        HistoryError::InvalidPageToken => {
            AckError::invalid("`before` is not a token this server gave")
        }
        HistoryError::InvalidArgument(message) => AckError::invalid(message),
        HistoryError::CallNotFound(_) => AckError::new(ErrorCode::CallNotFound, "no such call"),
        HistoryError::Database(_) | HistoryError::Migration(_) => {
            tracing::warn!(%error, "call history unavailable");
            AckError::new(
                ErrorCode::Unavailable,
                "the call history is unavailable; try again",
            )
        }
        HistoryError::Corrupt(_) => {
            tracing::error!(%error, "call history record unreadable");
            AckError::new(ErrorCode::Internal, "internal error")
        }
    }
}

#[cfg(test)]
mod tests {
    use meetup_history::{AttendeeSnapshot, Outcome, UserRef};

    use super::*;

    #[test]
    fn calls_are_shown_from_the_users_side() {
        let call = CallSnapshot {
            call_id: "c1".into(),
            initiator: UserRef {
                id: "a".into(),
                username: "Ann".into(),
            },
            is_video: false,
            created_at: 1_700_000_000_000,
            ended_at: None,
            version: 2,
            attendees: vec![AttendeeSnapshot {
                user: UserRef {
                    id: "b".into(),
                    username: "Bob".into(),
                },
                invited_at: Some(1_700_000_000_000),
                joined_at: None,
                left_at: None,
                outcome: Outcome::Missed,
            }],
        };
        let mine = call_json(&call, "a");
        assert_eq!(mine["direction"], "outgoing");
        assert_eq!(mine["outcome"], Value::Null);
        assert_eq!(mine["startedAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(mine["endedAt"], Value::Null);
        let theirs = call_json(&call, "b");
        assert_eq!(theirs["direction"], "incoming");
        assert_eq!(theirs["outcome"], "missed");
        assert_eq!(theirs["attendees"][0]["joinedAt"], Value::Null);
    }
}
