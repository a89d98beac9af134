//! Learning that a container exited by itself: an async Wait on the pod's shim.
//!
//! The shim answers Wait only when the container has stopped, so each running container
//! has one parked connection (a tokio task, no thread). When it answers, or the shim
//! goes away, the container is no longer running and STOPPED is published.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::shim::protocol::{self, Request, RequestFrame, ResponseFrame, MAX_FRAME};
use crate::shim::ShimPaths;

/// Waits until the shim at `paths` reports container `id` stopped. An error means the
/// shim is gone, which ends the container as well.
pub async fn wait(paths: &ShimPaths, id: &str) -> io::Result<()> {
    let mut stream = UnixStream::connect(paths.socket()).await?;
    let frame =
        RequestFrame { v: protocol::PROTOCOL_VERSION, req: Request::Wait { id: id.to_string() } };
    stream.write_all(&protocol::encode(&frame)?).await?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    // Whatever the answer (a state, or "no such container"), it is not running any more.
    let _: ResponseFrame = serde_json::from_slice(&body).map_err(io::Error::other)?;
    Ok(())
}
