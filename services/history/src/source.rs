//! Ingest: the call changes as a durable JetStream pull consumer. Each message is
//! a complete snapshot of one call (a revision of its key in the `meetup_calls`
//! KV bucket); it is applied in one transaction and acknowledged only after the
//! commit, so a crash at any point loses nothing (the message comes again) and
//! duplicates nothing (an old or repeated version is ignored by the store).
//!
//! The decoder is a plain function ([`decode_call_record`] reads a
//! `meetup.bus.v1.CallRecord`), so that tests can feed other shapes.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use prost::Message as _;

use crate::record::{AttendeeSnapshot, CallSnapshot, Outcome, UserRef};
use crate::store::HistoryStore;
use crate::wire::ms_from_timestamp;

/// Where the consumer reads.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The stream (`KV_meetup_calls`).
    pub stream: String,
    /// The subjects of the stream to read (`$KV.meetup_calls.c.>`).
    pub filter_subject: String,
    /// Durable consumer name; every history replica of one database shares it.
    pub durable: String,
    /// How long a delivered message may stay unacknowledged before it comes again.
    pub ack_wait: Duration,
}

/// Why a message could not be read as a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a call record: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("call record without a call")]
    MissingCall,
    #[error("call record without an id")]
    MissingId,
}

/// Turns one message payload into a snapshot; `Ok(None)` for a message that
/// carries no snapshot (a KV delete or purge marker).
pub type Decoder = fn(&[u8]) -> Result<Option<CallSnapshot>, DecodeError>;

/// What went wrong with the source itself (not with one message).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("jetstream: {0}")]
    JetStream(String),
}

fn js_error(error: impl std::fmt::Display) -> SourceError {
    SourceError::JetStream(error.to_string())
}

/// The call record types, as the tests and the benchmark build them.
pub mod wire {
    pub use meetup_proto::bus::v1::CallRecord;
    pub use meetup_proto::calls::v1::{Attendee, Call, CallUser, Participant};
}

/// Decodes a `meetup.bus.v1.CallRecord`, the value of a call's key in the calls
/// bucket. An empty payload is a KV delete or purge marker: no snapshot.
pub fn decode_call_record(payload: &[u8]) -> Result<Option<CallSnapshot>, DecodeError> {
    if payload.is_empty() {
        return Ok(None);
    }
    let record = meetup_proto::bus::v1::CallRecord::decode(payload)?;
    let call = record.call.ok_or(DecodeError::MissingCall)?;
    if call.id.is_empty() {
        return Err(DecodeError::MissingId);
    }
    let ended = call.ended_at.is_some();
    let user = |u: Option<meetup_proto::calls::v1::CallUser>| {
        let u = u.unwrap_or_default();
        UserRef {
            id: u.id,
            username: u.username,
        }
    };
    let attendees = call
        .attendees
        .into_iter()
        .map(|a| AttendeeSnapshot {
            user: user(a.user),
            invited_at: a.invited_at.as_ref().map(ms_from_timestamp),
            joined_at: a.joined_at.as_ref().map(ms_from_timestamp),
            left_at: a.left_at.as_ref().map(ms_from_timestamp),
            outcome: outcome_from_bus(a.outcome, a.joined_at.is_some(), ended),
        })
        .collect();
    Ok(Some(CallSnapshot {
        call_id: call.id,
        initiator: user(call.initiator),
        is_video: call.is_video,
        created_at: call.created_at.as_ref().map(ms_from_timestamp).unwrap_or(0),
        ended_at: call.ended_at.as_ref().map(ms_from_timestamp),
        version: call.version,
        attendees,
    }))
}

/// The bus outcome; an unspecified (or unknown) one is inferred from the
/// times: joined is answered, else ringing while live and missed once ended.
fn outcome_from_bus(value: i32, joined: bool, ended: bool) -> Outcome {
    match value {
        1 => Outcome::Ringing,
        2 => Outcome::Answered,
        3 => Outcome::Declined,
        4 => Outcome::Missed,
        5 => Outcome::Cancelled,
        6 => Outcome::Busy,
        _ if joined => Outcome::Answered,
        _ if ended => Outcome::Missed,
        _ => Outcome::Ringing,
    }
}

/// Consumes `config.stream` into `store` until `shutdown`. Waits for the stream
/// to exist (the call service creates the bucket), and starts over when the
/// consumer fails (NATS restarted, consumer deleted). Messages are applied one at
/// a time in delivery order; a database failure is retried on the same message
/// (never acknowledged before it is written).
pub async fn run(
    js: jetstream::Context,
    config: SourceConfig,
    store: HistoryStore,
    decode: Decoder,
    shutdown: impl Future<Output = ()> + Send,
) {
    let consume = async {
        loop {
            let SourceError::JetStream(error) = consume(&js, &config, &store, decode).await;
            tracing::warn!(stream = %config.stream, %error, "history source interrupted; starting over");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = consume => {}
    }
}

/// One run of the consumer; returns only when it fails.
async fn consume(
    js: &jetstream::Context,
    config: &SourceConfig,
    store: &HistoryStore,
    decode: Decoder,
) -> SourceError {
    let stream = match js.get_stream(&config.stream).await {
        Ok(stream) => stream,
        Err(error) => return js_error(error),
    };
    let consumer: jetstream::consumer::PullConsumer = match stream
        .get_or_create_consumer(
            &config.durable,
            pull::Config {
                durable_name: Some(config.durable.clone()),
                filter_subject: config.filter_subject.clone(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: config.ack_wait,
                max_ack_pending: 1024,
                ..Default::default()
            },
        )
        .await
    {
        Ok(consumer) => consumer,
        Err(error) => return js_error(error),
    };
    let mut messages = match consumer.messages().await {
        Ok(messages) => messages,
        Err(error) => return js_error(error),
    };
    tracing::info!(stream = %config.stream, durable = %config.durable, "history source consuming");
    while let Some(message) = messages.next().await {
        match message {
            Ok(message) => handle(store, decode, &message).await,
            Err(error) => return js_error(error),
        }
    }
    SourceError::JetStream("message stream ended".into())
}

/// Applies one message and acknowledges it once written (or once known to be
/// unreadable, so that it does not come back for ever).
async fn handle(store: &HistoryStore, decode: Decoder, message: &jetstream::Message) {
    let metrics = crate::metrics::get();
    let snapshot = match decode(&message.payload) {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => {
            metrics.snapshot("skipped");
            ack(message, AckKind::Ack).await;
            return;
        }
        Err(error) => {
            tracing::error!(subject = %message.subject, %error, "undecodable call record dropped");
            metrics.snapshot("undecodable");
            ack(message, AckKind::Term).await;
            return;
        }
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = std::time::Instant::now();
        match store.apply(&snapshot).await {
            Ok(applied) => {
                metrics.applied(applied, started.elapsed());
                tracing::debug!(call_id = %snapshot.call_id, version = snapshot.version, ?applied, "call record applied");
                ack(message, AckKind::Ack).await;
                return;
            }
            Err(error) => {
                metrics.snapshot("error");
                tracing::warn!(call_id = %snapshot.call_id, %error, "call record not written; retrying");
                // Keep the message in progress so it is not redelivered meanwhile.
                ack(message, AckKind::Progress).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn ack(message: &jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        // Not fatal: the message comes again and is found already applied.
        tracing::warn!(%error, "ack failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decode_into_snapshots() {
        let ts = |s| {
            Some(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        let record = wire::CallRecord {
            call: Some(wire::Call {
                id: "c1".into(),
                initiator: Some(wire::CallUser {
                    id: "a".into(),
                    username: "Ann".into(),
                }),
                is_video: true,
                created_at: ts(10),
                ended_at: ts(20),
                version: 3,
                attendees: vec![
                    wire::Attendee {
                        user: Some(wire::CallUser {
                            id: "b".into(),
                            username: "Bob".into(),
                        }),
                        invited_at: ts(10),
                        joined_at: ts(11),
                        left_at: ts(20),
                        outcome: 2,
                        ..Default::default()
                    },
                    wire::Attendee {
                        user: Some(wire::CallUser {
                            id: "c".into(),
                            username: "Cy".into(),
                        }),
                        invited_at: ts(10),
                        outcome: 0,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            change: None,
            traceparent: String::new(),
        };
        let snapshot = decode_call_record(&record.encode_to_vec())
            .ok()
            .flatten()
            .map(|s| {
                (
                    s.version,
                    s.ended_at,
                    s.attendees[0].outcome,
                    s.attendees[1].outcome,
                )
            });
        assert_eq!(
            snapshot,
            Some((3, Some(20_000), Outcome::Answered, Outcome::Missed))
        );
        assert!(matches!(decode_call_record(b""), Ok(None)));
        assert!(decode_call_record(b"\xff\xff").is_err());
        let no_id = wire::CallRecord {
            call: Some(wire::Call::default()),
            ..Default::default()
        };
        assert!(matches!(
            decode_call_record(&no_id.encode_to_vec()),
            Err(DecodeError::MissingId)
        ));
    }
}
