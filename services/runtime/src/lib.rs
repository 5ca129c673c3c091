//! Plumbing every MeetUp binary shares: the event bus (NATS or in-process) and its
//! subjects, the ordered event publisher, logging set-up, shutdown signals and the
//! gRPC server wrapper with health and reflection.

#![forbid(unsafe_code)]

pub mod bus;
pub mod grpc;
mod local;
pub mod metrics;
pub mod publisher;
pub mod service;
pub mod shutdown;
pub mod subjects;
pub mod telemetry;
pub mod tracing_context;

pub use bus::{Bus, BusError, BusMessage, Subscription};
pub use publisher::{OrderedPublisher, Receipt};
