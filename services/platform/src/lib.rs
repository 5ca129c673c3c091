//! Plumbing every MeetUp binary shares: the shared state store (JetStream KV or
//! in-memory), the bus (NATS or in-process) and its subjects, the relay log of
//! away sessions (a JetStream stream or in-process), logging set-up, shutdown
//! signals and the gRPC server wrapper with health and reflection.
//!
//! Every backend that can live in this process or elsewhere is one enum with
//! the variants `Local` (in this process: the embedded mode) and `Remote`
//! (another process: the NATS server); the binaries' composition roots choose.

#![forbid(unsafe_code)]

pub mod bus;
pub mod fields;
pub mod grpc;
mod local;
pub mod metrics;
pub mod reason;
pub mod relay_log;
pub mod service;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod subjects;
pub mod telemetry;
pub mod tracing_context;

pub use bus::{Bus, BusError, BusMessage, Subscription};
