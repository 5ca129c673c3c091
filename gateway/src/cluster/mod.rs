//! Keeping this gateway's place in the cluster: its lease (`lease`: liveness and
//! fencing) and its health (`health`: service probes and reconciliation).

mod health;
mod lease;

pub use health::watch;
pub use lease::{renew_lease, take_lease};
