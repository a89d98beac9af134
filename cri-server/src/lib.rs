//! berthd's parts, as a library so the integration tests can speak the streaming
//! protocols with the same codec (`streaming::spdy`) the daemon uses.

pub mod config;
pub mod daemon;
pub mod logging;
pub mod rpc;
pub mod rpc_span;
pub mod streaming;
pub mod telemetry;
