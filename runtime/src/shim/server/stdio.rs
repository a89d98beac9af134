//! Container I/O: output pipes into the CRI log and attached clients, attached input
//! into the container's stdin, terminals, and the stdio a new container is given.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::clock::now_ns;
use crate::shim::protocol::*;

use super::pipes::set_window_size;
use super::state::{fail, Attacher, Reply, Shim};

impl Shim {
    /// Reads what a container pipe has; at EOF writes the last partial line and marks
    /// the pipe done. True at EOF.
    pub(super) fn pump_container(&mut self, id: &str, pi: usize) -> bool {
        let Some(c) = self.containers.get_mut(id) else { return false };
        let Some(p) = c.pipes.get_mut(pi).filter(|p| !p.eof) else { return true };
        let eof = match p.file.read(&mut self.buf) {
            Ok(0) => true,
            Ok(n) => {
                let stream = p.split.stream();
                for a in &mut c.attachers {
                    a.send(stream, &self.buf[..n]);
                }
                let mut out = Vec::new();
                p.split.push(&self.buf[..n], now_ns(), &mut out);
                if let Some(e) = c.log.write_or_drop(&out) {
                    eprintln!("berth-shim: write log of {id}: {e}; dropping its output until writes work again");
                }
                false
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                false
            }
            Err(_) => true, // EIO from a pty master whose slave is gone
        };
        if eof {
            let mut out = Vec::new();
            p.split.finish(now_ns(), &mut out);
            let _ = c.log.write(&out);
            p.eof = true;
        }
        eof
    }

    /// Drains container pipes without blocking (after the process exited).
    pub(super) fn drain_container(&mut self, id: &str) {
        for pi in 0..self.containers.get(id).map_or(0, |c| c.pipes.len()) {
            for _ in 0..1024 {
                let has = {
                    let Some(p) = self.containers.get(id).and_then(|c| c.pipes.get(pi)) else {
                        break;
                    };
                    let mut pfd = [PollFd::new(p.file.as_fd(), PollFlags::POLLIN)];
                    // A pipe whose writers are all gone reports POLLHUP without POLLIN
                    // once empty; reading it then gives EOF, which flushes the last
                    // partial line before Wait is answered.
                    let ready = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
                    matches!(poll(&mut pfd, PollTimeout::ZERO), Ok(n) if n > 0)
                        && pfd[0].revents().is_some_and(|r| r.intersects(ready))
                };
                if !has || self.pump_container(id, pi) {
                    break;
                }
            }
        }
    }

    pub(super) fn attach(
        &mut self,
        id: &str,
        stdin: bool,
        stderr: bool,
        fds: Vec<OwnedFd>,
    ) -> Reply {
        let next = self.next_attacher + 1;
        let c = self
            .containers
            .get_mut(id)
            .ok_or((ErrorKind::NotFound, format!("container {id} not found")))?;
        if c.status == Status::Stopped {
            return fail(ErrorKind::FailedPrecondition, format!("container {id} has exited"));
        }
        let mut fds = fds.into_iter().map(File::from);
        let nonblocking = |f: File| -> std::result::Result<File, (ErrorKind, String)> {
            nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
                .or_else(|e| fail(ErrorKind::Internal, format!("attach: {e}")))?;
            Ok(f)
        };
        let input = if stdin { fds.next().map(nonblocking).transpose()? } else { None };
        let stdout = fds.next().map(nonblocking).transpose()?;
        let stderr = if stderr { fds.next().map(nonblocking).transpose()? } else { None };
        self.next_attacher = next;
        c.attachers.push(Attacher { id: next, stdin: input, stdout, stderr, gone: false });
        Ok(Response::Ok)
    }

    pub(super) fn resize(&mut self, id: &str, width: u16, height: u16) -> Reply {
        let c = self.get(id)?;
        let Some(master) = &c.master else {
            return fail(ErrorKind::FailedPrecondition, format!("container {id} has no tty"));
        };
        set_window_size(master.as_fd(), width, height)
            .or_else(|e| fail(ErrorKind::Internal, format!("resize: {e}")))?;
        Ok(Response::Ok)
    }

    /// Moves client input to the container's stdin (what does not fit waits in
    /// `stdin_pending`, and the client is not read again until it is written).
    pub(super) fn pump_attach_input(&mut self, id: &str, aid: u64) {
        let Some(c) = self.containers.get_mut(id) else { return };
        let Some(a) = c.attachers.iter_mut().find(|a| a.id == aid) else { return };
        let Some(input) = a.stdin.as_mut() else { return };
        let n = match input.read(&mut self.buf) {
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                return
            }
            Err(_) => 0,
        };
        if n > 0 {
            if c.stdin.is_some() {
                c.stdin_pending.extend_from_slice(&self.buf[..n]);
            }
        } else {
            a.stdin = None;
            if c.stdin_once && c.stdin.is_some() {
                if c.master.is_some() {
                    // A terminal cannot be half-closed: end-of-file is the EOF character.
                    c.stdin_pending.push(0x04);
                } else {
                    c.stdin_closing = true;
                }
            }
        }
        self.flush_stdin(id);
    }

    /// Writes pending input to the container's stdin; closes it when asked and done.
    pub(super) fn flush_stdin(&mut self, id: &str) {
        let Some(c) = self.containers.get_mut(id) else { return };
        let mut broken = false;
        if let Some(f) = c.stdin.as_mut() {
            while !c.stdin_pending.is_empty() {
                match f.write(&c.stdin_pending) {
                    Ok(n) => {
                        c.stdin_pending.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => {
                        // The container closed its stdin: what it did not read is lost.
                        broken = true;
                        break;
                    }
                }
            }
        }
        if broken || c.stdin.is_none() {
            c.stdin_pending.clear();
            c.stdin = None;
        }
        if c.stdin_closing && c.stdin_pending.is_empty() {
            c.stdin = None;
            c.stdin_closing = false;
        }
    }

    pub(super) fn detach_client(&mut self, id: &str, aid: u64) {
        if let Some(c) = self.containers.get_mut(id) {
            if let Some(a) = c.attachers.iter_mut().find(|a| a.id == aid) {
                a.gone = true;
            }
        }
    }
}
