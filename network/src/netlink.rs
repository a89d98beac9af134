//! Helpers every rtnetlink connection of berth-network shares.

/// Netlink has no flow control: when a burst of answers (a hundred pods set up at once on
/// one connection) overruns the socket's buffer the kernel drops them, and the calls that
/// waited for them never return. Give the socket room for such bursts (root may exceed
/// `net.core.rmem_max`).
pub(crate) fn enlarge_receive_buffer<S: netlink_sys::AsyncSocket>(socket: &mut S) {
    use std::os::fd::AsRawFd;
    let fd = socket.socket_mut().as_raw_fd();
    let size: libc::c_int = 16 << 20;
    // SAFETY: setsockopt reads an int from the pointer, which outlives the call.
    let set = |opt| unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot enlarge the netlink receive buffer");
    }
}
