//! The dispatcher: one task per gateway that follows the presence and calls
//! buckets (a watch of each), applies their changes to the mirror, tells this
//! gateway's sockets what they mean, and delivers relays addressed to them.
//!
//! One task keeps one order: changes are handled before relays that arrived after
//! them, so a peer never gets an offer before it has heard of the joiner. A watch
//! that breaks (NATS restarted, a node died) is opened again; its snapshot is
//! compared with the mirror, so changes missed meanwhile are told as well.

pub(crate) mod announce;
mod follow;
mod relays;

use futures::StreamExt;
use meetup_proto::bus::v1::{CallChat, CallRecord, UserRecord};
use meetup_runtime::Subscription;
use meetup_runtime::store::{Watched, keys};
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
    loop {
        let due = users_list.due(&gw);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            item = presence.next() => {
                on_presence(&gw, item, &mut users_list).await;
                gw.mirror().publish_progress();
                // A long burst keeps this branch ready: what is due goes out
                // meanwhile, not only once the burst is over.
                users_list.flush_due(&gw).await;
            }
            item = calls.next() => {
                on_calls(&gw, item);
                gw.mirror().publish_progress();
            }
            () = gw.mirror().presence_stalled() => {
                if presence.reopen() {
                    on_presence(&gw, Followed::Lost, &mut users_list).await;
                }
            }
            () = gw.mirror().calls_stalled() => {
                if calls.reopen() {
                    on_calls(&gw, Followed::Lost);
                }
            }
            Some(message) = relays.next() => deliver_relay(&gw, message).await,
            Some(message) = pushes.next() => deliver_push(&gw, message),
            () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                users_list.flush_due(&gw).await;
            }
        }
    }
    tracing::debug!("dispatcher stopped");
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
