//! The dispatcher: one task per gateway that follows the presence and calls
//! buckets (a watch of each), applies their changes to the mirror, tells this
//! gateway's sockets what they mean, and delivers relays addressed to them.
//!
//! One task keeps one order: changes are handled before relays that arrived after
//! them, so a peer never gets an offer before it has heard of the joiner. A watch
//! that breaks (NATS restarted, a node died) is opened again; its snapshot is
//! compared with the mirror, so changes missed meanwhile are told as well.

use std::time::Duration;

use futures::StreamExt;
use meetup_proto::bus::v1::{CallRecord, Relay, RelayKind, UserRecord};
use meetup_runtime::store::{Bucket, StoreError, WatchStream, Watched, keys};
use meetup_runtime::{BusMessage, Subscription};
use prost::Message;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::gateway::Gateway;
use crate::replica::{CallNotice, PresenceNotice, public_participants};

/// Pause before a broken watch is opened again.
const REWATCH_AFTER: Duration = Duration::from_millis(250);

/// What following a bucket brings.
enum Followed {
    /// A new watch: its snapshot comes next, then [`Watched::Current`].
    Started,
    Item(Watched),
    /// The watch broke; a new one starts shortly.
    Lost,
}

/// One bucket's watch, opened again whenever it breaks.
struct Follow {
    bucket: Bucket,
    name: &'static str,
    stream: Option<WatchStream>,
    retry_at: tokio::time::Instant,
}

impl Follow {
    fn new(bucket: Bucket, name: &'static str) -> Self {
        Follow {
            bucket,
            name,
            stream: None,
            retry_at: tokio::time::Instant::now(),
        }
    }

    /// What happened next; `None` while the watch is down (it is reopened in time).
    async fn next(&mut self) -> Option<Followed> {
        let Some(stream) = self.stream.as_mut() else {
            tokio::time::sleep_until(self.retry_at).await;
            return match self.bucket.watch().await {
                Ok(stream) => {
                    tracing::info!(bucket = self.name, "watching");
                    self.stream = Some(stream);
                    Some(Followed::Started)
                }
                Err(error) => {
                    self.failed(&error);
                    None
                }
            };
        };
        match stream.next().await {
            Some(Ok(item)) => Some(Followed::Item(item)),
            Some(Err(error)) => {
                self.failed(&error);
                Some(Followed::Lost)
            }
            None => {
                self.failed(&StoreError::WatchEnded("the watch ended".into()));
                Some(Followed::Lost)
            }
        }
    }

    /// Drops a watch that is open but stuck, to open a new one at once. True
    /// when there was one to drop.
    fn reopen(&mut self) -> bool {
        if self.stream.take().is_none() {
            return false;
        }
        tracing::warn!(bucket = self.name, "watch stuck; watching again");
        crate::metrics::get().bus_error("watch");
        self.retry_at = tokio::time::Instant::now();
        true
    }

    fn failed(&mut self, error: &StoreError) {
        tracing::warn!(bucket = self.name, %error, "watch lost; watching again");
        crate::metrics::get().bus_error("watch");
        self.stream = None;
        self.retry_at = tokio::time::Instant::now() + REWATCH_AFTER;
    }
}

/// Runs until `stop` turns true.
pub async fn run(gw: Gateway, mut relays: Subscription, mut stop: watch::Receiver<bool>) {
    let mut presence = Follow::new(gw.store().presence.clone(), "presence");
    let mut calls = Follow::new(gw.store().calls.clone(), "calls");
    let mut users_list = UsersListBroadcast::default();
    loop {
        let due = users_list.due(&gw);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(item) = presence.next() => {
                on_presence(&gw, item, &mut users_list).await;
                gw.replica().publish_progress();
            }
            Some(item) = calls.next() => {
                on_calls(&gw, item);
                gw.replica().publish_progress();
            }
            () = gw.replica().presence_stalled() => {
                if presence.reopen() {
                    on_presence(&gw, Followed::Lost, &mut users_list).await;
                }
            }
            () = gw.replica().calls_stalled() => {
                if calls.reopen() {
                    on_calls(&gw, Followed::Lost);
                }
            }
            Some(message) = relays.next() => deliver_relay(&gw, message),
            () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                users_list.flush(&gw).await;
            }
        }
    }
    tracing::debug!("dispatcher stopped");
}

async fn on_presence(gw: &Gateway, item: Followed, users_list: &mut UsersListBroadcast) {
    let notices = match item {
        Followed::Started => {
            gw.replica().presence_watch_started();
            return;
        }
        Followed::Lost => {
            gw.replica().presence_watch_lost();
            return;
        }
        Followed::Item(Watched::Current) => gw.replica().presence_current(),
        Followed::Item(Watched::Entry(entry)) => {
            let Some(user_id) = keys::user_id_of(&entry.key) else {
                return;
            };
            let record = entry.value.and_then(|v| match UserRecord::decode(v) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(%error, "undecodable user record");
                    None
                }
            });
            gw.replica().apply_user(&user_id, record, entry.revision)
        }
    };
    announce_presence(gw, notices, users_list).await;
}

fn on_calls(gw: &Gateway, item: Followed) {
    let notices = match item {
        Followed::Started => {
            gw.replica().calls_watch_started();
            return;
        }
        Followed::Lost => {
            gw.replica().calls_watch_lost();
            return;
        }
        Followed::Item(Watched::Current) => gw.replica().calls_current(),
        Followed::Item(Watched::Entry(entry)) => {
            let Some(call_id) = keys::call_id_of(&entry.key) else {
                return;
            };
            let record = entry.value.and_then(|v| match CallRecord::decode(v) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(%error, "undecodable call record");
                    None
                }
            });
            gw.replica().apply_call(&call_id, record, entry.revision)
        }
    };
    for notice in notices {
        announce_call(gw, notice);
    }
}

/// Sends `users-list` to every local socket: at once when none went out lately,
/// else once when the interval is over, with the list as it is then. A burst of
/// joins so costs a few lists instead of one per join (each list goes to every
/// socket), every client still ends on the exact final list, and since the mirror
/// only moves forward, no list is older than one sent before it.
#[derive(Debug, Default)]
struct UsersListBroadcast {
    last: Option<tokio::time::Instant>,
    last_change: Option<tokio::time::Instant>,
    pending: bool,
}

/// A burst is over once presence has been quiet this long: the final list then
/// goes out without waiting for the rest of the interval.
const BURST_OVER: Duration = Duration::from_millis(100);

/// Bytes per second of `users-list` traffic a burst may cause before lists coalesce.
const USERS_LIST_BUDGET: f64 = 64e6;
/// A public user record is about this long in JSON.
const USER_RECORD_BYTES: f64 = 80.0;

impl UsersListBroadcast {
    /// The least time between two lists: what keeps a burst's list traffic under
    /// [`USERS_LIST_BUDGET`], between 20 ms and 5 s.
    fn interval(gw: &Gateway) -> Duration {
        let (users, _) = gw.replica().counts();
        let sockets = crate::metrics::get().connections.get().max(1) as f64;
        let seconds = users as f64 * USER_RECORD_BYTES * sockets / USERS_LIST_BUDGET;
        Duration::from_secs_f64(seconds.clamp(0.02, 5.0))
    }

    async fn changed(&mut self, gw: &Gateway) {
        self.last_change = Some(tokio::time::Instant::now());
        match self.last {
            Some(last) if last.elapsed() < Self::interval(gw) => self.pending = true,
            _ => self.flush(gw).await,
        }
    }

    async fn flush(&mut self, gw: &Gateway) {
        let list = gw.replica().users_list();
        gw.emit_all("users-list", &*list, None).await;
        self.last = Some(tokio::time::Instant::now());
        self.pending = false;
    }

    /// When the coalesced list is due, if one is: at the end of the interval,
    /// or as soon as the burst is over.
    fn due(&self, gw: &Gateway) -> Option<tokio::time::Instant> {
        if !self.pending {
            return None;
        }
        let interval_over = self.last.map(|last| last + Self::interval(gw));
        let burst_over = self.last_change.map(|change| change + BURST_OVER);
        match (interval_over, burst_over) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

async fn announce_presence(
    gw: &Gateway,
    notices: Vec<PresenceNotice>,
    users_list: &mut UsersListBroadcast,
) {
    for notice in notices {
        match notice {
            PresenceNotice::ListChanged => users_list.changed(gw).await,
            PresenceNotice::Online { user, session } => {
                let sender = gw.local_sid(&session.session_id, &session.gateway_id);
                gw.emit_all("user-joined", &user, sender).await;
            }
            PresenceNotice::Offline { user_id } => gw.emit_all("user-left", &user_id, None).await,
        }
    }
}

/// This gateway's sessions in `call`, except those of `except_user`.
fn local_sessions<'a>(
    gw: &'a Gateway,
    call: &'a meetup_proto::calls::v1::Call,
    except_user: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    call.participants
        .iter()
        .filter(move |p| {
            p.gateway_id == gw.id() && p.user.as_ref().is_none_or(|u| u.id != except_user)
        })
        .map(|p| p.session_id.as_str())
}

fn announce_call(gw: &Gateway, notice: CallNotice) {
    match notice {
        CallNotice::Started { call } => {
            let initiator = call
                .initiator
                .as_ref()
                .map(|u| json!({ "id": u.id, "username": u.username }));
            let payload =
                json!({ "callId": call.id, "initiator": initiator, "isVideo": call.is_video });
            for user_id in &call.invited_user_ids {
                for session_id in gw.replica().sessions_on(user_id, gw.id()) {
                    gw.emit_to_session(&session_id, "incoming-call", &payload);
                }
            }
        }
        CallNotice::UserJoined {
            call,
            user,
            user_id,
        } => {
            let payload = json!({ "callId": call.id, "user": user, "participants": public_participants(&call) });
            for session_id in local_sessions(gw, &call, &user_id) {
                gw.emit_to_session(session_id, "user-joined-call", &payload);
            }
        }
        CallNotice::UserLeft { call, user_id } => {
            let payload = json!({ "callId": call.id, "userId": user_id, "participants": public_participants(&call) });
            for session_id in local_sessions(gw, &call, &user_id) {
                gw.emit_to_session(session_id, "user-left-call", &payload);
            }
        }
        CallNotice::Removed { call_id, session } => {
            if session.gateway_id == gw.id() {
                gw.emit_to_session(
                    &session.session_id,
                    "call-left",
                    &json!({ "callId": call_id }),
                );
            }
        }
        CallNotice::Ended { call_id, sessions } => {
            let payload = json!({ "callId": call_id });
            for p in sessions.iter().filter(|p| p.gateway_id == gw.id()) {
                gw.emit_to_session(&p.session_id, "call-ended", &payload);
            }
        }
    }
}

/// Delivers a relay that another gateway routed to one of this gateway's sockets.
fn deliver_relay(gw: &Gateway, message: BusMessage) {
    let relay = match Relay::decode(message.payload) {
        Ok(relay) => relay,
        Err(error) => {
            tracing::warn!(%error, "undecodable relay");
            return;
        }
    };
    let event = match RelayKind::try_from(relay.kind) {
        Ok(RelayKind::Offer) => "webrtc-offer",
        Ok(RelayKind::Answer) => "webrtc-answer",
        Ok(RelayKind::IceCandidate) => "webrtc-ice-candidate",
        _ => {
            tracing::warn!(kind = relay.kind, "relay of unknown kind");
            return;
        }
    };
    match RawValue::from_string(relay.payload_json) {
        Ok(raw) => gw.emit_to_session(&relay.target_session_id, event, &*raw),
        Err(error) => tracing::warn!(%error, "relay payload is not JSON"),
    }
}
