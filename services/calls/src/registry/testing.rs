//! What the registry's unit tests share: a registry on fresh in-memory buckets,
//! participants, users put online, an attendee's outcome.

use bytes::Bytes;
use meetup_platform::store::{BucketSettings, StateStore, keys};
use meetup_proto::calls::v1::{Call, Outcome, Participant};
use prost::Message;

use super::{CallLimits, CallRegistry, participant};

pub(super) fn registry(limits: CallLimits) -> (CallRegistry, StateStore) {
    let state = StateStore::memory(BucketSettings::default());
    (CallRegistry::new(&state, limits), state)
}

pub(super) fn p(user: &str, session: &str) -> Participant {
    participant(user, &user.to_uppercase(), session, "gw")
}

/// Puts `users` online in the presence bucket (one session each).
pub(super) async fn online(state: &StateStore, users: &[&str]) {
    use meetup_proto::bus::v1::UserRecord;
    use meetup_proto::presence::v1::{OnlineUser, Session, User};
    for user in users {
        let record = UserRecord {
            user: Some(OnlineUser {
                user: Some(User {
                    id: (*user).into(),
                    ..User::default()
                }),
                sessions: vec![Session {
                    session_id: format!("s{user}"),
                    gateway_id: "gw".into(),
                    ..Session::default()
                }],
            }),
            ..UserRecord::default()
        };
        state
            .presence
            .put(&keys::user(user), Bytes::from(record.encode_to_vec()))
            .await
            .expect("online");
    }
}

pub(super) fn outcome_of(call: &Call, user: &str) -> Outcome {
    call.attendees
        .iter()
        .find(|a| a.user.as_ref().is_some_and(|u| u.id == user))
        .and_then(|a| Outcome::try_from(a.outcome).ok())
        .unwrap_or(Outcome::Unspecified)
}
