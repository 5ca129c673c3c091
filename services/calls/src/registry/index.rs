//! What each replica keeps of the calls bucket, fed by its watch (see
//! `meetup_platform::store::due`): the live calls by their next away deadline
//! or ring timeout, the ended calls by when they ended, the calls of each
//! session, user and gateway, the chats whose call is over, and the counts.
//! The periodic passes and the lookups of a session's or a user's calls ask
//! it instead of scanning every call. It is a hint: whoever acts on what it
//! names reads the record again first.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use meetup_platform::store::due::{Deadlines, View};
use meetup_platform::store::{Entry, keys};
use meetup_proto::calls::v1::{Call, Outcome};

use super::reads::Counts;
use super::shared::{decode_call, user_id};

/// This replica's index of the calls bucket.
#[derive(Debug, Default)]
pub(super) struct CallsIndex {
    /// What the index holds of each call, to take it out when the call changes.
    calls: HashMap<String, Held>,
    /// Live calls by the earliest time something in them runs out: an away
    /// session's grace or a ringing invitation.
    expiry: Deadlines<String>,
    /// Ended calls by when they ended.
    ended: Deadlines<String>,
    by_session: HashMap<String, BTreeSet<String>>,
    by_user: HashMap<String, BTreeSet<String>>,
    by_gateway: HashMap<String, BTreeSet<String>>,
    /// Calls with a chat key.
    chats: BTreeSet<String>,
    /// Those of them whose call is not live.
    orphan_chats: BTreeSet<String>,
    counts: Counts,
}

/// One call as the index holds it.
#[derive(Debug, Default)]
struct Held {
    live: bool,
    sessions: Vec<String>,
    users: Vec<String>,
    gateways: Vec<String>,
}

fn add(map: &mut HashMap<String, BTreeSet<String>>, keys: &[String], call_id: &str) {
    for key in keys {
        map.entry(key.clone())
            .or_default()
            .insert(call_id.to_owned());
    }
}

fn take(map: &mut HashMap<String, BTreeSet<String>>, keys: &[String], call_id: &str) {
    for key in keys {
        if let Some(calls) = map.get_mut(key) {
            calls.remove(call_id);
            if calls.is_empty() {
                map.remove(key);
            }
        }
    }
}

fn unique(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn time(t: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(t).ok())
}

/// The earliest away deadline or ring timeout of a live call.
fn next_expiry(call: &Call) -> Option<SystemTime> {
    let away = call.participants.iter().filter_map(|p| time(p.away_until));
    let rings = call
        .attendees
        .iter()
        .filter(|a| a.outcome == Outcome::Ringing as i32)
        .filter_map(|a| time(a.ring_until));
    away.chain(rings).min()
}

impl View for CallsIndex {
    fn apply(&mut self, entry: &Entry) {
        if let Some(call_id) = keys::call_id_of(&entry.key) {
            let call = decode_call(entry).and_then(|r| r.call);
            self.set_call(call_id, call);
        } else if let Some(call_id) = keys::chat_call_id_of(&entry.key) {
            if entry.value.is_some() {
                self.chats.insert(call_id.clone());
            } else {
                self.chats.remove(&call_id);
            }
            self.place_chat(&call_id);
        }
    }
}

impl CallsIndex {
    fn set_call(&mut self, call_id: String, call: Option<Call>) {
        if let Some(old) = self.calls.remove(&call_id) {
            take(&mut self.by_session, &old.sessions, &call_id);
            take(&mut self.by_user, &old.users, &call_id);
            take(&mut self.by_gateway, &old.gateways, &call_id);
            if old.live {
                self.counts.active_calls -= 1;
                self.counts.participants -= old.sessions.len() as u32;
            }
        }
        self.expiry.remove(&call_id);
        self.ended.remove(&call_id);
        let Some(call) = call else {
            self.place_chat(&call_id);
            return;
        };
        let held = match time(call.ended_at) {
            Some(ended_at) => {
                self.ended.set(call_id.clone(), Some(ended_at));
                Held::default()
            }
            // An ended call without a readable time: the sweep's fallback
            // read finds it (it is not live, so nothing else needs it).
            None if call.ended_at.is_some() => Held::default(),
            None => {
                self.expiry.set(call_id.clone(), next_expiry(&call));
                let sessions: Vec<String> = call
                    .participants
                    .iter()
                    .map(|p| p.session_id.clone())
                    .collect();
                let held = Held {
                    live: true,
                    users: unique(
                        call.participants
                            .iter()
                            .map(|p| user_id(p).to_owned())
                            .collect(),
                    ),
                    gateways: unique(
                        call.participants
                            .iter()
                            .map(|p| p.gateway_id.clone())
                            .collect(),
                    ),
                    sessions,
                };
                add(&mut self.by_session, &held.sessions, &call_id);
                add(&mut self.by_user, &held.users, &call_id);
                add(&mut self.by_gateway, &held.gateways, &call_id);
                self.counts.active_calls += 1;
                self.counts.participants += held.sessions.len() as u32;
                held
            }
        };
        self.calls.insert(call_id.clone(), held);
        self.place_chat(&call_id);
    }

    /// Files a call's chat as orphaned when its call is not live.
    fn place_chat(&mut self, call_id: &str) {
        let live = self.calls.get(call_id).is_some_and(|h| h.live);
        if self.chats.contains(call_id) && !live {
            self.orphan_chats.insert(call_id.to_owned());
        } else {
            self.orphan_chats.remove(call_id);
        }
    }

    /// The live calls where an away grace or a ring ran out by `now`.
    pub(super) fn expiring(&self, now: SystemTime) -> Vec<String> {
        self.expiry.due(now)
    }

    /// The calls that ended before `at`.
    pub(super) fn ended_before(&self, at: SystemTime) -> Vec<String> {
        self.ended.due(at)
    }

    /// The live calls `session_id` is in.
    pub(super) fn calls_of_session(&self, session_id: &str) -> Vec<String> {
        self.by_session
            .get(session_id)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The live calls other than `except` with a session of one of `users`.
    pub(super) fn calls_of_users(&self, users: &[String], except: &str) -> BTreeSet<String> {
        users
            .iter()
            .filter_map(|u| self.by_user.get(u))
            .flatten()
            .filter(|c| c.as_str() != except)
            .cloned()
            .collect()
    }

    /// The gateways that live calls have sessions of.
    pub(super) fn gateways(&self) -> Vec<String> {
        self.by_gateway.keys().cloned().collect()
    }

    /// The live calls with a session of `gateway_id`.
    pub(super) fn calls_on_gateway(&self, gateway_id: &str) -> Vec<String> {
        self.by_gateway
            .get(gateway_id)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The calls whose chat is still there after they ended.
    pub(super) fn orphan_chats(&self) -> Vec<String> {
        self.orphan_chats.iter().cloned().collect()
    }

    pub(super) fn counts(&self) -> Counts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use meetup_proto::bus::v1::CallRecord;
    use meetup_proto::calls::v1::Attendee;
    use prost::Message;

    use meetup_platform::store::StateStore;
    use meetup_platform::store::leases::LeaseView;

    use super::*;
    use crate::registry::testing::online;
    use crate::registry::{CallLimits, CallRegistry, ENDED_RETENTION, participant};

    fn entry(key: String, call: Option<Call>, revision: u64) -> Entry {
        Entry {
            key,
            value: call.map(|call| {
                Bytes::from(
                    CallRecord {
                        call: Some(call),
                        ..CallRecord::default()
                    }
                    .encode_to_vec(),
                )
            }),
            revision,
        }
    }

    #[test]
    fn a_call_is_filed_under_its_sessions_users_gateways_and_deadlines_and_moves_with_them() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut away = participant("u1", "U1", "s1", "gw1");
        away.away_until = Some((at + Duration::from_secs(5)).into());
        let mut call = Call {
            id: "c".into(),
            participants: vec![away, participant("u2", "U2", "s2", "gw2")],
            attendees: vec![Attendee {
                outcome: Outcome::Ringing as i32,
                ring_until: Some((at + Duration::from_secs(3)).into()),
                ..Attendee::default()
            }],
            ..Call::default()
        };
        let mut index = CallsIndex::default();
        index.apply(&entry(keys::call("c"), Some(call.clone()), 1));
        index.apply(&entry(keys::chat("c"), Some(Call::default()), 2));
        assert_eq!(index.calls_of_session("s2"), ["c"]);
        assert_eq!(index.calls_of_users(&["u1".into()], "other").len(), 1);
        assert!(index.calls_of_users(&["u1".into()], "c").is_empty());
        let mut gateways = index.gateways();
        gateways.sort();
        assert_eq!(gateways, ["gw1", "gw2"]);
        assert!(index.expiring(at).is_empty());
        assert_eq!(
            index.expiring(at + Duration::from_secs(3)),
            ["c"],
            "the ring"
        );
        assert_eq!(index.counts().participants, 2);
        assert!(index.orphan_chats().is_empty());

        call.participants.remove(1);
        call.attendees.clear();
        index.apply(&entry(keys::call("c"), Some(call.clone()), 3));
        assert!(index.calls_of_session("s2").is_empty());
        assert_eq!(index.gateways(), ["gw1"]);
        assert!(index.expiring(at + Duration::from_secs(4)).is_empty());
        assert_eq!(index.expiring(at + Duration::from_secs(5)), ["c"], "away");

        call.participants.clear();
        call.ended_at = Some(at.into());
        index.apply(&entry(keys::call("c"), Some(call), 4));
        assert!(
            index.gateways().is_empty()
                && index.expiring(at + Duration::from_secs(10_000)).is_empty()
        );
        assert_eq!(index.ended_before(at), ["c"]);
        assert_eq!(index.orphan_chats(), ["c"]);
        assert_eq!(index.counts(), Counts::default());

        index.apply(&entry(keys::chat("c"), None, 5));
        index.apply(&entry(keys::call("c"), None, 6));
        assert!(index.orphan_chats().is_empty() && index.ended_before(at).is_empty());
        assert!(index.calls.is_empty() && index.by_user.is_empty());
    }

    /// Many live calls, each its own user, session and gateway `gw` (alive).
    async fn many_calls(state: &StateStore, r: &CallRegistry, n: usize) {
        state
            .gateways
            .put(&keys::lease("gw"), Bytes::from_static(b"x"))
            .await
            .expect("lease");
        for n in 0..n {
            r.start(
                &format!("many{n}"),
                participant(&format!("u{n}"), "U", &format!("s{n}"), "gw"),
                false,
                vec![],
                "",
            )
            .await
            .expect("start");
        }
    }

    #[tokio::test]
    async fn periodic_passes_with_nothing_due_read_nothing_of_many_calls() {
        let state = StateStore::memory(Default::default());
        let r = CallRegistry::new(&state, CallLimits::default());
        many_calls(&state, &r, 200).await;
        let mut costly = Vec::new();
        let mut read = |what: &str, before: u64| {
            let now = state.calls.scanned().expect("in memory");
            if now - before > 2 {
                costly.push(format!("{what} read {} entries", now - before));
            }
            now
        };
        let before = state.calls.scanned().expect("in memory");
        assert_eq!(r.expire_away().await.expect("expire"), 0);
        let before = read("an expiry pass", before);
        let mut view = LeaseView::default();
        assert_eq!(r.sweep(&mut view, ENDED_RETENTION).await.expect("sweep"), 0);
        let before = read("a sweep", before);
        r.invite("many0", vec!["u1".into()], "", None, "")
            .await
            .expect("invite");
        let before = read("an invitation", before);
        let (left, _) = r
            .remove_session("nobody", vec![], "")
            .await
            .expect("remove");
        assert!(left.is_empty());
        let before = read("a session's calls", before);
        assert_eq!(r.counts().await.expect("counts").active_calls, 200);
        read("the counts", before);
        assert!(costly.is_empty(), "{costly:?}");
    }

    #[tokio::test]
    async fn a_replica_learns_from_its_watch_what_another_wrote() {
        let state = StateStore::memory(Default::default());
        let limits = CallLimits {
            ring_timeout: Duration::from_millis(30),
            ..CallLimits::default()
        };
        let (a, b) = (
            CallRegistry::new(&state, limits),
            CallRegistry::new(&state, limits),
        );
        many_calls(&state, &a, 20).await;
        online(&state, &["u0", "u1", "u5"]).await;
        // b's index has followed a's writes once it is current.
        assert_eq!(b.counts().await.expect("counts").active_calls, 20);
        a.join("many1", participant("u0", "U", "s0b", "gw"), "")
            .await
            .expect("join");
        a.set_away("s2", vec![], Duration::from_millis(20), "")
            .await
            .expect("away");
        let invited = a
            .invite("many3", vec!["u1".into()], "", None, "")
            .await
            .expect("invite");
        assert_eq!(invited.ringing, ["u1"]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let before = state.calls.scanned().expect("in memory");
        assert_eq!(b.expire_away().await.expect("expire"), 1, "s2 went");
        let call = b.get("many3").await.expect("live");
        assert!(
            call.attendees
                .iter()
                .any(|a| a.outcome == Outcome::Missed as i32),
            "u1's ring ran out"
        );
        let invited = b
            .invite("many4", vec!["u0".into(), "u5".into()], "", None, "")
            .await
            .expect("invite");
        let mut busy = invited.busy;
        busy.sort();
        assert_eq!(busy, ["u0", "u5"], "u0 in two calls, u5 in its own");
        let (left, _) = b.remove_session("s0b", vec![], "").await.expect("remove");
        assert_eq!(left, ["many1"]);
        assert_eq!(
            state.calls.scanned().expect("in memory"),
            before,
            "all from b's index"
        );
        let counts = b.counts().await.expect("counts");
        assert_eq!((counts.active_calls, counts.participants), (19, 19));
    }
}
