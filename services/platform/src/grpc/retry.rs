//! Retries as one layer on a gRPC client's transport ([`RetryLayer`]), so that
//! no call site writes its own: a call whose connection was refused is sent
//! again, whatever it is; a call whose replica went away before answering is
//! sent once more (to another replica) when its method is safe to repeat.
//!
//! Which methods are safe is declared once, in the contract: the rpcs marked
//! `option idempotency_level = IDEMPOTENT;` in `proto/meetup/*/v1/*.proto`,
//! read here from the encoded descriptor set the proto crate already ships
//! for reflection. The proto is where a service's author states what its
//! methods do, and every client of it (the gateway, internal services) gets
//! the same answer without a list to keep in step.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prost::Message;
use prost_types::method_options::IdempotencyLevel;
use tonic::body::Body;
use tonic::codegen::{StdError, http};
use tonic::{Code, Status};
use tower::ServiceExt;

/// How many times a call whose connection could not be made is sent again.
pub const REFUSED_RETRIES: u32 = 6;

/// Wraps a client transport in [`Retry`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryLayer;

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry::new(inner)
    }
}

/// A client transport that sends a call again when it never left this
/// process, or when its replica went away and the method is safe to repeat.
///
/// A call whose connection was refused never left this process, so it is sent
/// again, a few times, whatever it is: the balancer keeps picking a replica
/// that stopped (its connection is retried lazily, only when picked) until it
/// notices, and during a rolling restart that turned such calls into
/// `unavailable` acks while the other replica was serving.
///
/// Request bodies are buffered (a unary or server-streaming call sends one
/// message, and none of our rpcs streams its request), so a call can be sent
/// again; responses are not: once a response's headers say it was answered,
/// it is the caller's.
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
}

impl<S> Retry<S> {
    pub fn new(inner: S) -> Self {
        Retry { inner }
    }
}

impl<S, B> tower::Service<http::Request<Body>> for Retry<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>> + Clone + Send + 'static,
    S::Error: Into<StdError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = StdError;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<B>, StdError>>;

    /// Always ready: each attempt waits for its own clone of the transport to
    /// be ready, so that a transport that fails to get ready fails that
    /// attempt (and is retried like it) rather than the caller's readiness.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StdError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(send(self.inner.clone(), request))
    }
}

/// What a failed attempt says about sending the call again.
#[derive(Clone, Copy, Debug)]
struct Failure {
    /// The connection could not be made: nothing was sent.
    never_sent: bool,
    /// No answer came from the service: its replica died or went away.
    went_away: bool,
}

impl Failure {
    fn of(status: &Status) -> Failure {
        Failure {
            never_sent: never_sent(status),
            went_away: replica_went_away(status),
        }
    }
}

/// Sends `request` through `inner` until it is answered, or fails in a way
/// that sending it again would not mend.
async fn send<S, B>(
    mut inner: S,
    request: http::Request<Body>,
) -> Result<http::Response<B>, StdError>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<StdError>,
{
    let method = request.uri().path().to_owned();
    let repeatable = is_repeatable(&method);
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let (mut refused, mut retried) = (0, false);
    loop {
        let attempt = rebuild(&parts, &body);
        let ready: Result<&mut S, StdError> = inner.ready().await.map_err(Into::into);
        let outcome = match ready {
            Ok(ready) => ready.call(attempt).await.map_err(Into::into),
            Err(error) => Err(error),
        };
        // Seen the way the tonic client will see it: an error of the
        // transport, or a status in the headers of a trailers-only response
        // (the service refused the call, or something answered for it).
        let (outcome, failure, message) = match outcome {
            Ok(response) => match Status::from_header_map(response.headers()) {
                Some(status) if status.code() != Code::Ok => (
                    Ok(response),
                    Failure::of(&status),
                    status.message().to_owned(),
                ),
                _ => return Ok(response),
            },
            Err(error) => {
                // `from_error` keeps the error as the status's source, and the
                // client takes a boxed `Status` as it is: nothing is lost.
                let status = Status::from_error(error);
                let (failure, message) = (Failure::of(&status), status.message().to_owned());
                (Err(Box::new(status) as StdError), failure, message)
            }
        };
        if failure.never_sent && refused < REFUSED_RETRIES {
            refused += 1;
            tokio::time::sleep(Duration::from_millis(5 * u64::from(refused))).await;
        } else if failure.went_away && repeatable && !retried {
            tracing::info!(
                method,
                error = message,
                "service call failed with its replica; trying another"
            );
            retried = true;
        } else {
            return outcome;
        }
    }
}

/// The request of the next attempt: the same head, the same body.
fn rebuild(parts: &http::request::Parts, body: &Bytes) -> http::Request<Body> {
    let mut request = http::Request::new(Body::new(Full::new(body.clone())));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    *request.extensions_mut() = parts.extensions.clone();
    request
}

/// Whether the method at `path` ("/package.Service/Method") is safe to send
/// again after its replica went away: its rpc is marked IDEMPOTENT (or
/// NO_SIDE_EFFECTS) in the protos.
pub fn is_repeatable(path: &str) -> bool {
    static REPEATABLE: OnceLock<HashSet<String>> = OnceLock::new();
    REPEATABLE
        .get_or_init(|| repeatable_methods(meetup_proto::FILE_DESCRIPTOR_SET))
        .contains(path)
}

/// The paths of the methods an encoded `FileDescriptorSet` marks safe to
/// repeat. A set that does not decode (it is built with this crate, so it
/// does) marks none: nothing is then retried that may not be.
fn repeatable_methods(encoded: &[u8]) -> HashSet<String> {
    let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
        tracing::error!(
            "the proto descriptor set does not decode; no call is retried after its replica went away"
        );
        return HashSet::new();
    };
    let mut paths = HashSet::new();
    for file in &set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                let level = method
                    .options
                    .as_ref()
                    .map_or(IdempotencyLevel::IdempotencyUnknown, |o| {
                        o.idempotency_level()
                    });
                if matches!(
                    level,
                    IdempotencyLevel::Idempotent | IdempotencyLevel::NoSideEffects
                ) {
                    paths.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    paths
}

/// True when the call could not even connect (nothing was sent).
pub fn never_sent(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        cause = error.source();
    }
    // tonic's connector's own wording, when the cause is not kept.
    status.message() == "tcp connect error"
}

/// True for a failure that left no answer from the service (its replica died or
/// could not be reached), as opposed to an answer that refused the call.
///
/// A replica that stops gracefully ends its HTTP/2 connection with GOAWAY; a
/// call that crossed it on the wire is reset with the HTTP/2 reason NO_ERROR,
/// which tonic reports as `Internal` "h2 protocol error: ...". That is the
/// connection going away, not the service answering: a rolling restart showed
/// such calls as `internal` acks while the other replica was serving.
pub fn replica_went_away(status: &Status) -> bool {
    let transport_reset =
        status.code() == Code::Internal && status.message().starts_with("h2 protocol error");
    (matches!(status.code(), Code::Unavailable | Code::Unknown) || transport_reset)
        && !crate::reason::carries_one(status)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    const JOIN_CALL: &str = "/meetup.calls.v1.CallService/JoinCall";
    const SEND_MESSAGE: &str = "/meetup.calls.v1.CallService/SendCallMessage";

    /// One attempt's outcome, as a fake transport gives it.
    #[derive(Clone)]
    enum Answer {
        /// The connection was refused (an error of the transport).
        Refused,
        /// The stream was reset by a replica that went away.
        Reset,
        /// A trailers-only response with this status.
        Status(Code, &'static str),
        Ok,
    }

    /// A transport that answers each attempt with the next of `script` (the
    /// last one over and over), and records the bodies it was sent.
    #[derive(Clone)]
    struct Scripted {
        script: Arc<Vec<Answer>>,
        seen: Arc<Mutex<Vec<Bytes>>>,
    }

    impl Scripted {
        fn new(script: Vec<Answer>) -> Self {
            Scripted {
                script: Arc::new(script),
                seen: Arc::default(),
            }
        }

        fn bodies(&self) -> Vec<Bytes> {
            self.seen.lock().expect("not poisoned").clone()
        }
    }

    impl tower::Service<http::Request<Body>> for Scripted {
        type Response = http::Response<Body>;
        type Error = StdError;
        type Future = futures::future::BoxFuture<'static, Result<http::Response<Body>, StdError>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StdError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<Body>) -> Self::Future {
            let this = self.clone();
            Box::pin(async move {
                let body = request.into_body().collect().await?.to_bytes();
                let attempt = {
                    let mut seen = this.seen.lock().expect("not poisoned");
                    seen.push(body);
                    seen.len()
                };
                let answer = this
                    .script
                    .get(attempt - 1)
                    .or(this.script.last())
                    .cloned()
                    .unwrap_or(Answer::Ok);
                match answer {
                    Answer::Refused => {
                        // As tonic reports a connect error: `unavailable`,
                        // with the refused connection among its causes.
                        let mut status = Status::unavailable("connect failed");
                        status.set_source(Arc::new(std::io::Error::from(
                            std::io::ErrorKind::ConnectionRefused,
                        )));
                        Err(Box::new(status) as StdError)
                    }
                    Answer::Reset => Err(Box::new(Status::internal(
                        "h2 protocol error: stream no longer needed",
                    )) as StdError),
                    Answer::Status(code, message) => Ok(Status::new(code, message).into_http()),
                    Answer::Ok => Ok(http::Response::new(Body::empty())),
                }
            })
        }
    }

    /// Calls `path` through the layer over `transport`: the status the
    /// tonic client would see (`Ok` for an answer), and the bodies sent.
    async fn call(path: &str, transport: &Scripted) -> (Code, Vec<Bytes>) {
        let mut request = http::Request::new(Body::new(Full::new(Bytes::from_static(b"call"))));
        *request.uri_mut() = format!("http://service{path}").parse().expect("uri");
        let outcome = tower::Layer::layer(&RetryLayer, transport.clone())
            .oneshot(request)
            .await;
        let code = match outcome {
            Ok(response) => {
                Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code())
            }
            Err(error) => Status::from_error(error).code(),
        };
        (code, transport.bodies())
    }

    #[tokio::test]
    async fn a_refused_call_is_sent_again_whatever_it_is() {
        // Refused as the transport says it, and as tonic's connector words it.
        let transport = Scripted::new(vec![
            Answer::Refused,
            Answer::Status(Code::Unavailable, "tcp connect error"),
            Answer::Ok,
        ]);
        let (code, bodies) = call(SEND_MESSAGE, &transport).await;
        assert_eq!(code, Code::Ok);
        assert_eq!(bodies, vec![Bytes::from_static(b"call"); 3]);
    }

    #[tokio::test]
    async fn refused_calls_are_sent_again_only_so_often() {
        let transport = Scripted::new(vec![Answer::Refused]);
        let (code, bodies) = call(SEND_MESSAGE, &transport).await;
        assert_eq!(code, Code::Unavailable);
        assert_eq!(bodies.len(), 1 + REFUSED_RETRIES as usize);

        // A safe method has its one more try on top.
        let transport = Scripted::new(vec![Answer::Status(Code::Unavailable, "tcp connect error")]);
        let (code, bodies) = call(JOIN_CALL, &transport).await;
        assert_eq!(code, Code::Unavailable);
        assert_eq!(bodies.len(), 2 + REFUSED_RETRIES as usize);
    }

    #[tokio::test]
    async fn a_call_whose_replica_went_away_is_tried_once_more_when_it_is_safe() {
        let transport = Scripted::new(vec![Answer::Reset, Answer::Ok]);
        let (code, bodies) = call(JOIN_CALL, &transport).await;
        assert_eq!(code, Code::Ok);
        assert_eq!(bodies, vec![Bytes::from_static(b"call"); 2]);

        // Once only; and a trailers-only `unavailable` counts the same.
        let transport = Scripted::new(vec![
            Answer::Status(Code::Unavailable, "replica stopping"),
            Answer::Reset,
            Answer::Ok,
        ]);
        let (code, bodies) = call(JOIN_CALL, &transport).await;
        assert_eq!(code, Code::Internal);
        assert_eq!(bodies.len(), 2);
    }

    #[tokio::test]
    async fn a_call_whose_replica_went_away_is_not_repeated_when_it_is_not_safe() {
        let transport = Scripted::new(vec![Answer::Reset, Answer::Ok]);
        let (code, bodies) = call(SEND_MESSAGE, &transport).await;
        assert_eq!(code, Code::Internal);
        assert_eq!(bodies.len(), 1);
    }

    #[tokio::test]
    async fn an_answer_of_the_service_is_never_repeated() {
        for answer in [
            Answer::Status(Code::NotFound, "no such call"),
            Answer::Status(Code::Internal, "database exploded"),
            Answer::Status(Code::Cancelled, "Timeout expired"),
        ] {
            let transport = Scripted::new(vec![answer, Answer::Ok]);
            let (code, bodies) = call(JOIN_CALL, &transport).await;
            assert_ne!(code, Code::Ok);
            assert_eq!(bodies.len(), 1);
        }
        // Nor one that says why (a reason): the service refused it.
        let mut busy = Status::unavailable("too many sockets");
        crate::reason::attach(&mut busy, crate::reason::Reason::TooManySockets);
        assert!(!replica_went_away(&busy));
    }

    #[test]
    fn the_methods_safe_to_repeat_are_those_the_protos_mark() {
        let mut marked: Vec<String> = repeatable_methods(meetup_proto::FILE_DESCRIPTOR_SET)
            .into_iter()
            .collect();
        marked.sort();
        let calls = "/meetup.calls.v1.CallService/";
        let presence = "/meetup.presence.v1.PresenceService/";
        let mut expected: Vec<String> = [
            "CancelInvites",
            "InviteToCall",
            "JoinCall",
            "LeaveCall",
            "RemoveSession",
            "ResumeSession",
            "SetSessionAway",
        ]
        .iter()
        .map(|m| format!("{calls}{m}"))
        .chain(
            [
                "RegisterSession",
                "ResumeSession",
                "SetSessionAway",
                "UnregisterSession",
            ]
            .iter()
            .map(|m| format!("{presence}{m}")),
        )
        .collect();
        expected.sort();
        assert_eq!(marked, expected);
        assert!(is_repeatable(JOIN_CALL));
        assert!(!is_repeatable(SEND_MESSAGE));
        assert!(!is_repeatable("/meetup.calls.v1.CallService/StartCall"));
    }

    #[test]
    fn a_connection_reset_by_a_stopping_replica_counts_as_gone() {
        assert!(replica_went_away(&Status::unavailable("tcp connect error")));
        assert!(replica_went_away(&Status::internal(
            "h2 protocol error: http2 error"
        )));
        // The service's own answers are not retried elsewhere.
        assert!(!replica_went_away(&Status::internal("database exploded")));
        assert!(!replica_went_away(&Status::not_found("no such call")));
    }
}
