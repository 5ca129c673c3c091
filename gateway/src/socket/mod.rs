//! The socket edge: a new socket is authenticated and wired to its queue
//! (`connect`), its events are rate-limited and queued in arrival order
//! (`queue`), and one task per socket handles them strictly in order (`worker`).

mod connect;
mod queue;
mod worker;

pub use connect::OnConnect;
pub(crate) use worker::{Identity, SessionWorker};
