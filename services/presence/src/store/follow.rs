//! Following the presence bucket: the users' keys from a position on, and
//! each followed entry as a `WatchPresence` event.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use meetup_platform::store::{Present, Tracked, TrackedStream, keys};
use meetup_proto::presence::v1::{PresenceEvent, presence_event};

use super::PresenceStore;
use super::record::{change_name, decode, online};
use crate::error::PresenceError;

/// What [`PresenceStore::watch`] yields.
pub type PresenceEvents = Pin<Box<dyn Stream<Item = Result<PresenceEvent, PresenceError>> + Send>>;

impl PresenceStore {
    /// Follows the users' keys from `after` (see
    /// [`meetup_platform::store::Bucket::follow_after`]).
    pub async fn follow_after(&self, after: u64) -> Result<TrackedStream, PresenceError> {
        self.follow_users(after).await
    }

    /// The users' keys followed from `after` as `WatchPresence` events: from
    /// 0, every online user; then `Current`; then every change, a user's end
    /// (going offline, then its key's deletion) told once.
    pub async fn watch(&self, after: u64) -> Result<PresenceEvents, PresenceError> {
        let tracked = self.follow_after(after).await?;
        let mut present = Present::default();
        Ok(Box::pin(tracked.filter_map(move |item| {
            futures::future::ready(match item {
                Ok(tracked) => presence_event(tracked, &mut present).map(Ok),
                Err(error) => Some(Err(PresenceError::from(error))),
            })
        })))
    }
}

/// One followed entry of the presence bucket as an event (`None`: not for
/// followers, or an end already told).
fn presence_event(tracked: Tracked, present: &mut Present) -> Option<PresenceEvent> {
    use presence_event::Kind;
    let (entry, snapshot) = match &tracked {
        Tracked::Current => {
            present.admit(&tracked, true);
            return Some(PresenceEvent {
                kind: Kind::Current as i32,
                ..PresenceEvent::default()
            });
        }
        Tracked::Snapshot(entry) => (entry, true),
        Tracked::Changed(entry) => (entry, false),
    };
    let user_id = keys::user_id_of(&entry.key)?;
    let record = decode(entry);
    let user = record.as_ref().and_then(online).cloned();
    // The snapshot is who is online: a user's end before it is no news.
    if snapshot && user.is_none() {
        return None;
    }
    if !present.admit(&tracked, user.is_some()) {
        return None;
    }
    let change = record.as_ref().map(change_name).unwrap_or_default();
    let (kind, change) = match (snapshot, user.is_some()) {
        (true, _) => (Kind::Snapshot, ""),
        (false, true) => (Kind::Changed, change),
        (false, false) => (Kind::Offline, change),
    };
    Some(PresenceEvent {
        kind: kind as i32,
        position: entry.revision,
        user_id,
        user,
        change: change.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use meetup_proto::bus::v1::LeaveReason;

    use super::*;
    use crate::store::state::in_memory as store;

    /// `(kind, user id, change)` of the next event.
    async fn next(events: &mut PresenceEvents) -> (presence_event::Kind, String, String) {
        let event = events.next().await.expect("an event").expect("no error");
        (event.kind(), event.user_id, event.change)
    }

    #[tokio::test]
    async fn a_watch_shows_who_is_online_then_each_change_and_an_end_once() {
        use presence_event::Kind;
        let (store, _state) = store(3);
        store
            .register("u1", "Ann", "gw", "s1", "", "")
            .await
            .expect("register");
        // Gone before the watch: its key is deleted, no news to a new follower.
        store
            .register("u2", "Bob", "gw", "s2", "", "")
            .await
            .expect("register");
        store
            .unregister("s2", Some("u2"), LeaveReason::Left, "")
            .await
            .expect("unregister");
        let mut events = store.watch(0).await.expect("watch");
        assert_eq!(
            next(&mut events).await,
            (Kind::Snapshot, "u1".into(), String::new())
        );
        assert_eq!(next(&mut events).await.0, Kind::Current);

        store
            .register("u3", "Cid", "gw", "s3", "", "")
            .await
            .expect("register");
        assert_eq!(
            next(&mut events).await,
            (Kind::Changed, "u3".into(), "registered".into())
        );
        store
            .set_away("u3", "s3", std::time::Duration::from_secs(5), None, "")
            .await
            .expect("away");
        assert_eq!(
            next(&mut events).await,
            (Kind::Changed, "u3".into(), "away".into())
        );
        // Offline once: the empty record is the end, its key's deletion no news.
        store
            .unregister("s3", Some("u3"), LeaveReason::Left, "")
            .await
            .expect("unregister");
        assert_eq!(
            next(&mut events).await,
            (Kind::Offline, "u3".into(), "unregistered".into())
        );
        store
            .register("u4", "Dee", "gw", "s4", "", "")
            .await
            .expect("register");
        assert_eq!(
            next(&mut events).await,
            (Kind::Changed, "u4".into(), "registered".into()),
            "u3's deletion made no event"
        );
    }
}
