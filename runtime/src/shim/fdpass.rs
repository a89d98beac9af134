//! File descriptors over the shim socket (SCM_RIGHTS).
//!
//! Streaming exec and attach hand the shim the ends of pipes (or a terminal) that berthd
//! itself streams to the client, so the shim never copies a streaming session's bytes
//! through the protocol and a daemon restart cannot leave a session half-owned.
//!
//! A request that carries fds is sent in one `sendmsg` with the descriptors attached to
//! its first byte; the receiver queues descriptors per connection in arrival order, and
//! the request says how many it takes.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Most descriptors one request may carry.
pub const MAX_FDS: usize = 4;

/// Writes all of `bytes`, the first chunk carrying `fds`.
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut sent = 0;
    while sent < bytes.len() {
        let iov = [IoSlice::new(&bytes[sent..])];
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() { &cmsg } else { &[] };
        match sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads what is available into `buf`, queueing any descriptors that came with it
/// (close-on-exec). `Ok(0)` at EOF.
pub fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let n = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = c {
            for fd in received {
                // SAFETY: the kernel just installed these descriptors in this process.
                fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if truncated {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too many descriptors"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_travel_with_their_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        send_with_fds(&a, b"hello", &[w.as_fd()]).unwrap();
        drop(w);
        let mut q = VecDeque::new();
        let mut buf = [0u8; 16];
        let n = recv_with_fds(&b, &mut buf, &mut q).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(q.len(), 1);
        let mut w = std::fs::File::from(q.pop_front().unwrap());
        w.write_all(b"through").unwrap();
        drop(w);
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "through");
    }

    #[test]
    fn plain_bytes_carry_no_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"x", &[]).unwrap();
        let mut q = VecDeque::new();
        let mut buf = [0u8; 4];
        assert_eq!(recv_with_fds(&b, &mut buf, &mut q).unwrap(), 1);
        assert!(q.is_empty());
    }
}
