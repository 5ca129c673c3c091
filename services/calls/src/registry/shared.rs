//! What every concern of the registry shares: the handle and its buckets, a
//! call's record as read ([`Current`]), and the one compare-and-set cycle every
//! change of a call goes through ([`CallRegistry::modify`] with a [`Decision`]).
//! The concern modules reach the state only through the `pub(super)` items here.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meetup_platform::store::due::Followed;
use meetup_platform::store::{self, Bucket, Change, StateStore, Versioned, keys};
use meetup_proto::bus::v1::{CallChange, CallRecord, call_change};
use meetup_proto::calls::v1::{Call, Participant};
use prost::Message;

use super::index::CallsIndex;
use crate::error::CallError;

/// How long a lookup waits for this replica's index to catch up with the
/// bucket before it reads the bucket itself.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// Cheap-to-clone handle on the calls bucket.
#[derive(Clone, Debug)]
pub struct CallRegistry {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    calls: Bucket,
    /// What this replica knows of the calls bucket, from its watch.
    seen: Followed<CallsIndex>,
    started: Bucket,
    leases: Bucket,
    /// Read (never written) to tell which invitees are online.
    presence: Bucket,
    limits: CallLimits,
}

/// Limits that hold across the cluster.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Most sessions in one call.
    pub max_participants: usize,
    /// Most live calls one user may have started.
    pub max_calls_per_user: usize,
    /// How long the sessions of a dead gateway stay away before they leave.
    pub resume_grace: Duration,
    /// How long an invitation rings before it is missed.
    pub ring_timeout: Duration,
    /// How many chat messages a call keeps.
    pub chat_history: usize,
}

/// The default of `RING_TIMEOUT_MS`.
pub const DEFAULT_RING_TIMEOUT: Duration = Duration::from_secs(45);
/// The default of `CALL_CHAT_HISTORY`.
pub const DEFAULT_CHAT_HISTORY: usize = 50;

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            max_participants: 16,
            max_calls_per_user: 5,
            resume_grace: Duration::ZERO,
            ring_timeout: DEFAULT_RING_TIMEOUT,
            chat_history: DEFAULT_CHAT_HISTORY,
        }
    }
}

/// A call's record and the revision it was read at.
#[derive(Debug, Clone)]
pub(super) struct Current {
    pub(super) record: CallRecord,
    pub(super) revision: u64,
}

impl Current {
    pub(super) fn live(&self) -> Option<&Call> {
        self.record.call.as_ref().filter(|c| c.ended_at.is_none())
    }
}

/// What a change decided: write this record, or leave the call as it is.
pub(super) enum Decision<T> {
    Write(Box<CallRecord>, T),
    Keep(T),
}

pub(super) fn user_id(p: &Participant) -> &str {
    p.user.as_ref().map(|u| u.id.as_str()).unwrap_or_default()
}

pub(super) fn decode_call(entry: &store::Entry) -> Option<CallRecord> {
    let value = entry.value.as_ref()?;
    match CallRecord::decode(value.clone()) {
        Ok(record) => Some(record),
        Err(error) => {
            tracing::error!(key = %entry.key, %error, "undecodable call record; treated as absent");
            None
        }
    }
}

pub(super) fn now() -> prost_types::Timestamp {
    SystemTime::now().into()
}

pub(super) fn change(change: call_change::Change) -> Option<CallChange> {
    Some(CallChange {
        change: Some(change),
    })
}

impl CallRegistry {
    pub fn new(state: &StateStore, limits: CallLimits) -> Self {
        CallRegistry {
            shared: Arc::new(Shared {
                calls: state.calls.clone(),
                seen: Followed::start(state.calls.clone()),
                started: state.call_index.clone(),
                leases: state.gateways.clone(),
                presence: state.presence.clone(),
                limits,
            }),
        }
    }

    /// The calls bucket (calls and their chats).
    pub(super) fn calls(&self) -> &Bucket {
        &self.shared.calls
    }

    /// The bucket of the calls each user started.
    pub(super) fn started_calls(&self) -> &Bucket {
        &self.shared.started
    }

    /// The gateways' leases.
    pub(super) fn leases(&self) -> &Bucket {
        &self.shared.leases
    }

    /// The presence bucket, read (never written) to tell who is online.
    pub(super) fn presence(&self) -> &Bucket {
        &self.shared.presence
    }

    pub(super) fn limits(&self) -> &CallLimits {
        &self.shared.limits
    }

    /// The call's record, if it has a decodable one.
    pub(super) async fn read(&self, call_id: &str) -> Result<Option<Current>, CallError> {
        let entry = self.shared.calls.get(&keys::call(call_id)).await?;
        Ok(entry.and_then(|e| {
            decode_call(&e).map(|record| Current {
                record,
                revision: e.revision,
            })
        }))
    }

    /// Reads the call, lets `decide` change it, and writes the result with the
    /// revision it read; again from the start when another writer came first
    /// ([`Followed::modify`]: this replica's index knows the write at once,
    /// before the watch brings it back). Returns `decide`'s value and the
    /// revision written (0 when nothing was).
    pub(super) async fn modify<T>(
        &self,
        call_id: &str,
        mut decide: impl FnMut(Option<&Current>) -> Result<Decision<T>, CallError>,
    ) -> Result<(T, u64), CallError> {
        self.shared
            .seen
            .modify(
                &keys::call(call_id),
                |read: Option<Versioned<CallRecord>>| {
                    let current = read.map(|r| Current {
                        record: r.value,
                        revision: r.revision,
                    });
                    let decided = decide(current.as_ref());
                    async move {
                        Ok::<_, CallError>(match decided? {
                            Decision::Keep(value) => Change::Keep(value),
                            Decision::Write(record, value) => Change::Put(*record, value),
                        })
                    }
                },
            )
            .await
    }

    /// Asks `query` of this replica's index of the calls bucket, once it has
    /// followed every write the bucket had; when it cannot within
    /// [`CATCH_UP_WAIT`] (starting, resyncing, far behind), of an index made
    /// of one full read. Either way what it names is a hint to re-read.
    pub(super) async fn lookup<R>(&self, query: impl Fn(&CallsIndex) -> R) -> Result<R, CallError> {
        // Every key of the bucket: the index files chats (`m.`) as well as calls.
        Ok(self.shared.seen.ask(CATCH_UP_WAIT, "", query).await?)
    }

    /// Every call record, read in one scan.
    pub(super) async fn records(&self) -> Result<Vec<Current>, CallError> {
        let entries = self.shared.calls.scan(keys::CALL_PREFIX).await?;
        Ok(entries
            .iter()
            .filter_map(|e| {
                decode_call(e).map(|record| Current {
                    record,
                    revision: e.revision,
                })
            })
            .collect())
    }

    /// Every live call, read in one scan.
    pub(super) async fn live_calls(&self) -> Result<Vec<Call>, CallError> {
        Ok(self
            .records()
            .await?
            .iter()
            .filter_map(|c| c.live().cloned())
            .collect())
    }
}
