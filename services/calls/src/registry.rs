//! Every call: one key per call in the calls bucket of the shared store, and one
//! index key per user listing the live calls they started. Every change is a
//! compare-and-set on the call's key (retried when another replica won the race),
//! so any number of replicas serve the same calls and the limits hold.
//!
//! A call's record is the whole call after the change, with the change itself;
//! an ended call keeps its record (`ended_at` set) for [`ENDED_RETENTION`] so
//! that the history service can read it, then any replica deletes it.
//!
//! Where to look: [`CallRegistry`] and what every concern shares (the buckets,
//! a record as read, the compare-and-set cycle) in `shared`; then one module
//! per concern, each using `shared` through its `pub(super)` items only:
//! `lifecycle` (start, join, leave, end), `started` (the calls a user
//! started), `invites`, `away` (away, resume, expiry), `sweep` (dead gateways,
//! old records), `chat`, and `reads` (get, list, counts, follow); `index`
//! is what this replica keeps of the calls bucket, fed by its watch, so
//! that those passes and lookups read only what is due.

mod away;
mod chat;
mod index;
mod invites;
mod lifecycle;
mod reads;
mod shared;
mod started;
mod sweep;
#[cfg(test)]
mod testing;

pub use chat::{MAX_TEXT_CHARS, Sender, check_text};
pub use invites::{Invited, invites_of, unavailable_at_start};
pub use lifecycle::{Left, participant};
pub use reads::Counts;
pub use shared::{CallLimits, CallRegistry, DEFAULT_CHAT_HISTORY, DEFAULT_RING_TIMEOUT};
pub use sweep::ENDED_RETENTION;
