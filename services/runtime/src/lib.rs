//! Plumbing every MeetUp binary shares: the shared state store (JetStream KV or
//! in-memory), the bus (NATS or in-process) and its subjects, logging set-up,
//! shutdown signals and the gRPC server wrapper with health and reflection.

#![forbid(unsafe_code)]

pub mod bus;
pub mod fields;
pub mod grpc;
mod local;
pub mod metrics;
pub mod reason;
pub mod service;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod subjects;
pub mod telemetry;
pub mod tracing_context;

pub use bus::{Bus, BusError, BusMessage, Subscription};
