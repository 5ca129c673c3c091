//! `meetup-loadgen`: open-loop load against MeetUp gateways (native Socket.IO) and
//! services (gRPC), latency recorded from each message's intended send time into
//! HDR histograms (no coordinated omission), results as one JSON line.

#![forbid(unsafe_code)]

pub mod bare;
pub mod churn;
pub mod grpc;
pub mod idle;
pub mod relay;
pub mod report;
pub mod sio;
pub mod soak;
pub mod storm;
