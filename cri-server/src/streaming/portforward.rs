//! Port-forward: TCP connections to ports of the pod's network namespace, made from a
//! thread that enters that namespace just for the connect (a socket keeps the namespace
//! it was made in).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::channels::{In, Out};

/// Where the pod's ports are: its pinned network namespace, or the host's.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub netns: Option<PathBuf>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl PodNetwork {
    /// Connects to `port` on the pod's loopback.
    pub async fn connect(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        let netns = self.netns.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread of its own: setns changes the calling thread, which must not be one
        // the async runtime goes on using.
        std::thread::Builder::new()
            .name("berthd-portfwd".into())
            .spawn(move || {
                let _ = tx.send(connect_in(netns, port));
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        let stream = rx.await.map_err(|_| "connect thread died".to_string())??;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        tokio::net::TcpStream::from_std(stream).map_err(|e| e.to_string())
    }
}

fn connect_in(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, String> {
    if let Some(ns) = &netns {
        let f = std::fs::File::open(ns)
            .map_err(|e| format!("the pod's network namespace {}: {e}", ns.display()))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering the pod's network namespace: {e}"))?;
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| {
        format!("failed to connect to localhost:{port} inside the pod's network namespace: {e}")
    })
}

/// Forwards one client connection: the client's data stream to the port and back. A
/// failure to connect is reported on the error stream. Both streams are closed at the end.
pub async fn forward(net: PodNetwork, port: u16, mut data_in: In, data_out: Out, error: Out) {
    let stream = match net.connect(port).await {
        Ok(s) => s,
        Err(message) => {
            error.write(Bytes::from(message)).await;
            error.close().await;
            data_out.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let upstream = async move {
        while let Some(chunk) = data_in.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let out = data_out.clone();
    let downstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !out.write(Bytes::copy_from_slice(&buf[..n])).await {
                        return;
                    }
                }
            }
        }
        out.close().await;
    };
    // The remote end closing ends the connection; the client's end of file only
    // half-closes it (the answer may still be coming).
    let upstream = tokio::spawn(upstream);
    downstream.await;
    upstream.abort();
    error.close().await;
}
