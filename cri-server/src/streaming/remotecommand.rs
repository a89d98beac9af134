//! Exec and attach sessions (the Kubernetes remote-command protocol), independent of
//! the transport: stdio moves between the session's pipes and the client's streams, the
//! terminal follows resize messages, and the outcome goes on the error stream.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use berth_runtime::container::streams::{resize_terminal, SessionIo, StreamOptions};
use berth_runtime::container::Containers;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::channels::{In, Out};

/// The remote-command protocol versions, by what changes between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io`: the error stream carries plain text.
    V1,
    /// `v2.channel.k8s.io`: stderr is not opened with a tty.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON `Status` with the exit code.
    V4,
    /// `v5.channel.k8s.io`: adds closing stdin (WebSocket).
    V5,
}

impl Version {
    pub const NAMES: [(&'static str, Version); 5] = [
        ("v5.channel.k8s.io", Version::V5),
        ("v4.channel.k8s.io", Version::V4),
        ("v3.channel.k8s.io", Version::V3),
        ("v2.channel.k8s.io", Version::V2),
        ("channel.k8s.io", Version::V1),
    ];
}

/// A client's streams for one session.
pub struct Channels {
    pub stdin: Option<In>,
    pub stdout: Option<Out>,
    pub stderr: Option<Out>,
    pub error: Out,
    pub resize: Option<In>,
    /// True once the client is gone.
    pub closed: watch::Receiver<bool>,
}

/// What a session is about.
pub enum Target {
    Exec { container_id: String, cmd: Vec<String> },
    Attach { container_id: String },
}

/// Runs an exec or attach session to its end and reports how it ended on the error
/// stream.
pub async fn run(
    containers: Arc<Containers>,
    target: Target,
    opts: StreamOptions,
    version: Version,
    mut ch: Channels,
) {
    let outcome = match target {
        Target::Exec { container_id, cmd } => {
            exec(&containers, &container_id, cmd.clone(), opts, &mut ch)
                .await
                .map(|code| (code, cmd))
        }
        Target::Attach { container_id } => {
            attach(&containers, &container_id, opts, &mut ch).await.map(|()| (0, Vec::new()))
        }
    };
    if *ch.closed.borrow() {
        return;
    }
    let report = match outcome {
        Ok((0, _)) => status_success(version),
        Ok((code, cmd)) => status_exit(version, &cmd, code),
        Err(message) => status_failure(version, &message),
    };
    if !report.is_empty() {
        ch.error.write(Bytes::from(report)).await;
    }
    ch.error.close().await;
}

async fn exec(
    containers: &Arc<Containers>,
    id: &str,
    cmd: Vec<String>,
    opts: StreamOptions,
    ch: &mut Channels,
) -> Result<i32, String> {
    let session = containers.exec_stream(id, cmd, opts).await.map_err(|e| e.to_string())?;
    let terminal = session.io.terminal;
    let mut pumps = Pumps::start(SessionIo { terminal: None, ..session.io }, ch);
    let resize = ch.resize.take();
    let resizer = tokio::spawn(async move {
        if let (Some(input), Some(term)) = (resize, terminal) {
            follow_resizes(input, |w, h| {
                let _ = resize_terminal(&term, w, h);
            })
            .await;
        }
    });
    let cancel = session.cancel;
    let mut exit = session.exit;
    let mut closed = ch.closed.clone();
    let code = tokio::select! {
        r = &mut exit => r.map_err(|e| e.to_string())?.map_err(|e| e.to_string()),
        _ = super::channels::until_true(&mut closed) => {
            // The client is gone: ending the shim connection kills the process.
            drop(cancel);
            let _ = exit.await;
            resizer.abort();
            pumps.abort();
            return Err("the client went away".into());
        }
    };
    drop(cancel);
    // Output written just before the exit is still in the pipes; anything the process
    // left running in the background may hold them open, so do not wait for that long.
    pumps.finish(Duration::from_secs(2)).await;
    resizer.abort();
    code
}

async fn attach(
    containers: &Arc<Containers>,
    id: &str,
    opts: StreamOptions,
    ch: &mut Channels,
) -> Result<(), String> {
    let io = containers.attach(id, opts).await.map_err(|e| e.to_string())?;
    let mut pumps = Pumps::start(io, ch);
    let resize = ch.resize.take();
    let resizer = {
        let containers = containers.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Some(input) = resize {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let forward = follow_resizes(input, move |w, h| {
                    let _ = tx.send((w, h));
                });
                let apply = async {
                    while let Some((w, h)) = rx.recv().await {
                        let _ = containers.resize(&id, w, h).await;
                    }
                };
                tokio::join!(forward, apply);
            }
        })
    };
    let mut closed = ch.closed.clone();
    tokio::select! {
        () = pumps.outputs_done() => {}
        _ = super::channels::until_true(&mut closed) => {}
    }
    resizer.abort();
    pumps.abort();
    Ok(())
}

/// The copies between a session's pipes and the client's streams.
struct Pumps {
    outputs: tokio::task::JoinSet<()>,
    input: Option<tokio::task::JoinHandle<()>>,
}

impl Pumps {
    fn start(io: SessionIo, ch: &mut Channels) -> Self {
        let mut outputs = tokio::task::JoinSet::new();
        for (fd, out) in [(io.stdout, ch.stdout.clone()), (io.stderr, ch.stderr.clone())] {
            if let Some(fd) = fd {
                outputs.spawn(copy_out(fd, out));
            }
        }
        let input = match (io.stdin, ch.stdin.take()) {
            (Some(fd), Some(input)) => Some(tokio::spawn(copy_in(input, fd))),
            // Stdin was asked for but the client opened no stream: close it at once.
            _ => None,
        };
        Self { outputs, input }
    }

    /// Until every output reached end of file.
    async fn outputs_done(&mut self) {
        while self.outputs.join_next().await.is_some() {}
    }

    async fn finish(mut self, grace: Duration) {
        let _ = tokio::time::timeout(grace, self.outputs_done()).await;
        self.abort();
    }

    fn abort(&mut self) {
        self.outputs.abort_all();
        if let Some(h) = &self.input {
            h.abort();
        }
    }
}

/// Copies a pipe (or terminal) to a stream until end of file, then closes the stream. A
/// missing stream still drains the pipe, so the process never blocks on a full pipe.
async fn copy_out(fd: OwnedFd, out: Option<Out>) {
    let Ok(mut rx) = pipe::Receiver::from_owned_fd_unchecked(fd) else { return };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // A terminal's master reads EIO once its last slave is closed: the end.
        let n = match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(out) = &out {
            if !out.write(Bytes::copy_from_slice(&buf[..n])).await {
                return;
            }
        }
    }
    if let Some(out) = out {
        out.close().await;
    }
}

/// Copies a client's stdin stream to the process until the client closes it.
async fn copy_in(mut input: In, fd: OwnedFd) {
    let Ok(mut tx) = pipe::Sender::from_owned_fd_unchecked(fd) else { return };
    while let Some(chunk) = input.recv().await {
        if tx.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

/// Terminal sizes arrive as a stream of JSON objects `{"Width":W,"Height":H}`.
#[derive(serde::Deserialize)]
struct TermSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Splits the resize stream into sizes: JSON objects, back to back, cut anywhere by the
/// transport. Garbage is dropped (and what was buffered with it), never fatal.
#[derive(Default)]
pub struct SizeDecoder {
    buf: Vec<u8>,
}

/// Most bytes kept while waiting for the rest of a size object.
const SIZE_BUF_MAX: usize = 4096;

impl SizeDecoder {
    /// The complete sizes `chunk` finishes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<(u16, u16)> {
        self.buf.extend_from_slice(chunk);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TermSize>();
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    consumed = it.byte_offset();
                    sizes.push((size.width, size.height));
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    consumed = self.buf.len();
                    break;
                }
                None => break,
            }
        }
        self.buf.drain(..consumed);
        if self.buf.len() > SIZE_BUF_MAX {
            self.buf.clear();
        }
        sizes
    }
}

async fn follow_resizes(mut input: In, mut apply: impl FnMut(u16, u16)) {
    let mut decoder = SizeDecoder::default();
    while let Some(chunk) = input.recv().await {
        for (w, h) in decoder.push(&chunk) {
            apply(w, h);
        }
    }
}

fn status_success(version: Version) -> Vec<u8> {
    if version >= Version::V4 {
        br#"{"metadata":{},"status":"Success"}"#.to_vec()
    } else {
        Vec::new()
    }
}

fn status_exit(version: Version, cmd: &[String], code: i32) -> Vec<u8> {
    let message = format!(
        "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"
    );
    if version < Version::V4 {
        return message.into_bytes();
    }
    serde_json::to_vec(&serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "NonZeroExitCode",
        "details": { "causes": [ { "reason": "ExitCode", "message": code.to_string() } ] },
    }))
    .unwrap_or_default()
}

fn status_failure(version: Version, message: &str) -> Vec<u8> {
    if version < Version::V4 {
        return message.as_bytes().to_vec();
    }
    serde_json::to_vec(&serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "details": { "causes": [ { "message": message } ] },
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_carries_the_code_for_v4() {
        let s: serde_json::Value =
            serde_json::from_slice(&status_exit(Version::V4, &["sh".into()], 3)).unwrap();
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert!(status_success(Version::V2).is_empty());
        assert_eq!(status_success(Version::V5), br#"{"metadata":{},"status":"Success"}"#.to_vec());
    }

    #[tokio::test]
    async fn resizes_split_across_chunks_are_applied_in_order() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for part in
            [&br#"{"Width":80,"He"#[..], br#"ight":24}{"Width":100,"Height":40}"#, b"garbage"]
        {
            tx.send(Bytes::from_static(part)).await.unwrap();
        }
        drop(tx);
        let mut seen = Vec::new();
        follow_resizes(rx, |w, h| seen.push((w, h))).await;
        assert_eq!(seen, vec![(80, 24), (100, 40)]);
    }
}
