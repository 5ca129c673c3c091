//! The presence state: one key per online user in the presence bucket, holding
//! the user and its sessions (sockets) on gateways. Every change is one
//! compare-and-set on that key, so any number of replicas serve the same state,
//! and the per-user session limit holds under concurrency.
//!
//! Where to look: [`PresenceStore`] is one handle whose methods are written by
//! concern, each module using only `state`'s way into the bucket (and into
//! `index`, what this replica keeps of the bucket from its watch, so that the
//! periodic passes ask it instead of scanning) and `record`'s reading of a record:
//! - `sessions`: register (within the per-user limit), unregister;
//! - `away`: set a session away, resume it on a new socket;
//! - `expiry`: remove the away sessions whose time ran out;
//! - `gateways`: a gateway's sessions going, the sweep of dead gateways;
//! - `reading`: get, list (the one whole-bucket scan left), counts;
//! - `follow`: the bucket followed as `WatchPresence` events.

mod away;
mod expiry;
mod follow;
mod gateways;
mod index;
mod reading;
mod record;
mod sessions;
mod state;

pub use away::Resumed;
pub use reading::Counts;
pub use sessions::{Registered, Unregistered};
pub use state::PresenceStore;
