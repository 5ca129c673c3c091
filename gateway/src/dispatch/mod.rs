//! The dispatcher: one task per gateway that follows the presence and calls
//! buckets (a watch of each), applies their changes to the mirror, tells this
//! gateway's sockets what they mean, and delivers relays addressed to them.
//!
//! One task keeps one order: changes are handled before relays that arrived after
//! them, so a peer never gets an offer before it has heard of the joiner. The
//! two watches are one order too where the protocol needs it: the services take
//! a session out of its calls before out of presence, and a user going offline
//! is told only after the calls watch has told its leaves (`user-left-call`
//! before `users-list` and `user-left`), whichever watch delivers first. A watch
//! that breaks (NATS restarted, a node died) is opened again; its snapshot is
//! compared with the mirror, so changes missed meanwhile are told as well.

pub(crate) mod announce;
mod follow;
mod relays;

use futures::StreamExt;
use meetup_platform::Subscription;
use meetup_platform::store::{Watched, keys};
use meetup_proto::bus::v1::{CallChat, CallRecord, UserRecord};
use prost::Message;
use tokio::sync::watch;

use crate::state::Gateway;
use announce::{UsersListBroadcast, announce_call, announce_presence};
use follow::{Follow, Followed};
use relays::{deliver_push, deliver_relay};

/// Runs until `stop` turns true.
pub async fn run(
    gw: Gateway,
    mut relays: Subscription,
    mut pushes: Subscription,
    mut stop: watch::Receiver<bool>,
) {
    let mut presence = Follow::new(gw.store().presence.clone(), "presence");
    let mut calls = Follow::new(gw.store().calls.clone(), "calls");
    let mut users_list = UsersListBroadcast::default();
    let mut calls_behind = CallsBehind::default();
    loop {
        let due = users_list.due(&gw);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            item = presence.next() => {
                if let Followed::Item(Watched::Entry(entry)) = &item
                    && let Some(user_id) = going_offline(&gw, entry)
                {
                    calls_first(&gw, &mut calls, &user_id, &mut calls_behind).await;
                }
                on_presence(&gw, item, &mut users_list).await;
                gw.mirror().publish_progress();
                // A long burst keeps this branch ready: what is due goes out
                // meanwhile, not only once the burst is over.
                users_list.flush_due(&gw).await;
            }
            item = calls.next() => {
                calls_behind.waited_in_vain = false;
                on_calls(&gw, item);
                gw.mirror().publish_progress();
            }
            // A waiter found a watch behind a write; it is stuck only if it
            // still is now (a burst is worked through, not read again).
            still_behind = gw.mirror().presence_stalled() => {
                if still_behind && presence.reopen() {
                    on_presence(&gw, Followed::Lost, &mut users_list).await;
                }
            }
            still_behind = gw.mirror().calls_stalled() => {
                if still_behind && calls.reopen() {
                    on_calls(&gw, Followed::Lost);
                }
            }
            Some(message) = relays.next() => deliver_relay(&gw, message),
            Some(message) = pushes.next() => deliver_push(&gw, message),
            () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                users_list.flush_due(&gw).await;
            }
        }
    }
    tracing::debug!("dispatcher stopped");
}

/// How long a user's offline change may wait for the calls watch to tell its
/// leaves, while that watch keeps delivering.
const CALLS_FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long the calls watch may stay silent during that wait before the
/// offline change goes out anyway (the call service may be down, its leaves
/// then come later).
const CALLS_SILENT: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether a wait for the calls watch ran out with nothing from it since: the
/// next offline change does not wait again until that watch delivers, so a
/// call service outage costs the dispatcher one wait, not one per user.
#[derive(Debug, Default)]
struct CallsBehind {
    waited_in_vain: bool,
}

/// The user whose key `entry` is, when the change takes its last session away
/// while the mirror still has the user in a call.
fn going_offline(gw: &Gateway, entry: &meetup_platform::store::Entry) -> Option<String> {
    let user_id = keys::user_id_of(&entry.key)?;
    let online = entry
        .value
        .as_ref()
        .and_then(|v| UserRecord::decode(v.clone()).ok())
        .and_then(|r| r.user)
        .is_some_and(|u| !u.sessions.is_empty());
    (!online && gw.mirror().in_a_call(&user_id)).then_some(user_id)
}

/// Applies calls changes until the mirror no longer has `user_id` in a call:
/// the services wrote its leaves before its presence change, so they are on
/// the calls watch, maybe not yet delivered. Bounded: a calls watch that is
/// silent for [`CALLS_SILENT`], or [`CALLS_FIRST_WAIT`] in all, ends the wait.
async fn calls_first(gw: &Gateway, calls: &mut Follow, user_id: &str, behind: &mut CallsBehind) {
    if behind.waited_in_vain {
        return;
    }
    let deadline = tokio::time::Instant::now() + CALLS_FIRST_WAIT;
    while gw.mirror().in_a_call(user_id) {
        let silent_until = (tokio::time::Instant::now() + CALLS_SILENT).min(deadline);
        // Follow::next is cancel-safe (see follow.rs): a timeout loses nothing.
        match tokio::time::timeout_at(silent_until, calls.next()).await {
            Ok(item) => {
                on_calls(gw, item);
                gw.mirror().publish_progress();
            }
            Err(_) => {
                tracing::debug!(
                    user_id,
                    "calls watch behind: user-left before its call leaves"
                );
                behind.waited_in_vain = true;
                return;
            }
        }
    }
}

async fn on_presence(gw: &Gateway, item: Followed, users_list: &mut UsersListBroadcast) {
    let notices = match item {
        Followed::Started => {
            gw.mirror().presence_watch_started();
            return;
        }
        Followed::Lost => {
            gw.mirror().presence_watch_lost();
            return;
        }
        Followed::Item(Watched::Current) => gw.mirror().presence_current(),
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
            // The trace of the request that wrote the record goes on here.
            let span = crate::traces::change(
                keys::PRESENCE_BUCKET,
                record.as_ref().map(|r| r.traceparent.as_str()),
                gw.id(),
            );
            let notices =
                span.in_scope(|| gw.mirror().apply_user(&user_id, record, entry.revision));
            tracing::Instrument::instrument(announce_presence(gw, notices, users_list), span).await;
            return;
        }
    };
    announce_presence(gw, notices, users_list).await;
}

fn on_calls(gw: &Gateway, item: Followed) {
    let notices = match item {
        Followed::Started => {
            gw.mirror().calls_watch_started();
            return;
        }
        Followed::Lost => {
            gw.mirror().calls_watch_lost();
            return;
        }
        Followed::Item(Watched::Current) => gw.mirror().calls_current(),
        Followed::Item(Watched::Entry(entry)) => {
            let Some(call_id) = keys::call_id_of(&entry.key) else {
                if let Some(call_id) = keys::chat_call_id_of(&entry.key) {
                    let chat = entry.value.and_then(|v| match CallChat::decode(v) {
                        Ok(chat) => Some(chat),
                        Err(error) => {
                            tracing::warn!(%error, "undecodable chat");
                            None
                        }
                    });
                    for notice in gw.mirror().apply_chat(&call_id, chat, entry.revision) {
                        announce_call(gw, notice);
                    }
                }
                return;
            };
            let record = entry.value.and_then(|v| match CallRecord::decode(v) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(%error, "undecodable call record");
                    None
                }
            });
            // The trace of the request that wrote the record goes on here.
            let span = crate::traces::change(
                keys::CALLS_BUCKET,
                record.as_ref().map(|r| r.traceparent.as_str()),
                gw.id(),
            );
            let _entered = span.enter();
            for notice in gw.mirror().apply_call(&call_id, record, entry.revision) {
                announce_call(gw, notice);
            }
            return;
        }
    };
    for notice in notices {
        announce_call(gw, notice);
    }
}
