//! The descriptors a container's stdio is made of: its output pipes (or a terminal's
//! master) as the shim reads them, and the ends the process gets.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use crate::executor::Stdio;
use crate::shim::log::{LineSplitter, Stream};

/// One output pipe being copied somewhere.
pub(super) struct Pipe {
    pub(super) file: File,
    pub(super) split: LineSplitter,
    /// Reached EOF (its last line is written); dropped at the end of the loop iteration.
    pub(super) eof: bool,
}

/// Sets a terminal's window size (the kernel sends SIGWINCH to its foreground group).
pub(crate) fn set_window_size(tty: BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: height, ws_col: width, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which outlives the call.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn pipe_nb() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

/// The child's stdio and what the shim keeps: output pipes (or the pty master) and stdin.
pub(super) fn make_stdio(tty: bool, stdin: bool) -> io::Result<(Stdio, Vec<Pipe>, Option<File>)> {
    if tty {
        let pty = nix::pty::openpty(None, None)?;
        let master = File::from(pty.master);
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
        let slave = pty.slave;
        let stdio = Stdio {
            stdin: slave.try_clone()?,
            stdout: slave.try_clone()?,
            stderr: slave,
            tty: true,
        };
        let input = if stdin { Some(master.try_clone()?) } else { None };
        return Ok((
            stdio,
            vec![Pipe { file: master, split: LineSplitter::new(Stream::Stdout), eof: false }],
            input,
        ));
    }
    let (out_r, out_w) = pipe_nb()?;
    let (err_r, err_w) = pipe_nb()?;
    let (stdin_fd, input) = if stdin {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        (r, Some(File::from(w)))
    } else {
        (OwnedFd::from(File::open("/dev/null")?), None)
    };
    let stdio = Stdio { stdin: stdin_fd, stdout: out_w, stderr: err_w, tty: false };
    let pipes = vec![
        Pipe { file: File::from(out_r), split: LineSplitter::new(Stream::Stdout), eof: false },
        Pipe { file: File::from(err_r), split: LineSplitter::new(Stream::Stderr), eof: false },
    ];
    Ok((stdio, pipes, input))
}
