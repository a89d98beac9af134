//! berthd's streaming server (exec, attach, port-forward). The CRI calls hand out
//! single-use URLs on it; clients upgrade those to SPDY/3.1 or WebSocket and speak the
//! Kubernetes remote-command and port-forward protocols over them.

pub mod channels;
mod portforward;
mod remotecommand;
mod server;
pub mod spdy;
pub mod spdy_conn;
mod tokens;
mod websocket;

pub use portforward::PodNetwork;
pub use remotecommand::SizeDecoder;
pub use server::{Pending, Streaming};
pub use websocket::{frame as ws_frame, unframe as ws_unframe, Framing};
