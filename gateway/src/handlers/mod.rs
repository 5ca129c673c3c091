//! What each client event does, one file per family: registration
//! (`user-joined`), calls (`start-call`, `join-call`, `leave-call`), relays
//! (`webrtc-*`), and the cleanup when a socket goes away. Each is a method of
//! the socket's [`crate::socket::SessionWorker`], run in the socket's order,
//! that returns what it answers ([`crate::protocol::ack::Handled`]: the events
//! for this socket, then the ack), which the worker sends.

mod calling;
mod calls;
pub(crate) mod cleanup;
mod registration;
mod relay;
