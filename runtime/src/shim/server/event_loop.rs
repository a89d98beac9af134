//! The shim's single-threaded poll(2) loop: what it waits on, reaping and exits, and the
//! connections it reads requests from and answers on.

use std::collections::VecDeque;
use std::fs::{self};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::clock::now_ns;
use crate::executor::cgroups;
use crate::shim::protocol::*;
use crate::shim::ExitRecord;

use super::state::{fail, Conn, ExecJob, Reply, Shim, Source, EXEC_OUTPUT_MAX};

impl Shim {
    pub(super) fn run(&mut self, listener: &UnixListener, sfd: &SignalFd) -> io::Result<()> {
        while !self.quit {
            let order: Vec<String> = self.containers.keys().cloned().collect();
            let mut fds: Vec<(BorrowedFd<'_>, PollFlags, Source)> = Vec::new();
            // SAFETY: every fd below outlives this iteration's poll (nothing is closed
            // before the events are handled, and handling re-reads by Source).
            let borrow = |fd: i32| unsafe { BorrowedFd::borrow_raw(fd) };
            fds.push((borrow(listener.as_raw_fd()), PollFlags::POLLIN, Source::Listener));
            fds.push((borrow(sfd.as_fd().as_raw_fd()), PollFlags::POLLIN, Source::Signals));
            for (id, c) in &self.conns {
                let ev = if c.busy { PollFlags::empty() } else { PollFlags::POLLIN };
                fds.push((borrow(c.stream.as_raw_fd()), ev, Source::Conn(*id)));
            }
            for (ci, id) in order.iter().enumerate() {
                for (pi, p) in self.containers[id].pipes.iter().enumerate().filter(|(_, p)| !p.eof)
                {
                    fds.push((
                        borrow(p.file.as_raw_fd()),
                        PollFlags::POLLIN,
                        Source::CtrPipe(ci, pi),
                    ));
                }
            }
            for (ci, id) in order.iter().enumerate() {
                let c = &self.containers[id];
                if let Some(f) = c.stdin.as_ref().filter(|_| !c.stdin_pending.is_empty()) {
                    fds.push((borrow(f.as_raw_fd()), PollFlags::POLLOUT, Source::CtrStdin(ci)));
                }
                for a in &c.attachers {
                    if let Some(f) = a.stdin.as_ref().filter(|_| c.stdin_pending.is_empty()) {
                        fds.push((
                            borrow(f.as_raw_fd()),
                            PollFlags::POLLIN,
                            Source::AttachIn(ci, a.id),
                        ));
                    }
                    // A pipe's write end reports POLLERR once its reader is gone.
                    if let Some(f) = a.stdout.as_ref() {
                        fds.push((
                            borrow(f.as_raw_fd()),
                            PollFlags::empty(),
                            Source::AttachOut(ci, a.id),
                        ));
                    }
                }
            }
            for e in &self.execs {
                let ei = e.pid;
                if let Some(f) = &e.out {
                    fds.push((
                        borrow(f.as_raw_fd()),
                        PollFlags::POLLIN,
                        Source::ExecPipe(ei, false),
                    ));
                }
                if let Some(f) = &e.err {
                    fds.push((
                        borrow(f.as_raw_fd()),
                        PollFlags::POLLIN,
                        Source::ExecPipe(ei, true),
                    ));
                }
            }
            let now = Instant::now();
            let timeout = self
                .execs
                .iter()
                .filter_map(|e| e.deadline)
                .map(|d| d.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1)
                // Code released once nothing has happened for a while, when no exec runs.
                .chain(
                    (self.code_in_use && self.execs.is_empty())
                        .then_some(super::code_pages::IDLE.as_millis() as i32),
                )
                .min()
                .map(|ms| PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX))
                .unwrap_or(PollTimeout::NONE);
            let mut pfds: Vec<PollFd<'_>> =
                fds.iter().map(|(fd, ev, _)| PollFd::new(*fd, *ev)).collect();
            // Last before sleeping: what runs between the release and the poll maps again.
            if std::mem::take(&mut self.release_code) {
                super::anon_pages::release();
                super::code_pages::release();
            }
            match poll(&mut pfds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<(Source, PollFlags)> = pfds
                .iter()
                .zip(&fds)
                .filter_map(|(p, (_, _, s))| p.revents().filter(|r| !r.is_empty()).map(|r| (*s, r)))
                .collect();
            drop(pfds);
            drop(fds);
            if ready.is_empty() && self.code_in_use && self.execs.is_empty() {
                self.code_in_use = false;
                self.release_code = true;
            }
            let mut closed_exec: Vec<(i32, bool)> = Vec::new();
            for (src, rev) in ready {
                match src {
                    Source::Listener | Source::Conn(_) => self.code_in_use = true,
                    _ => {}
                }
                match src {
                    Source::Listener => {
                        if let Ok((stream, _)) = listener.accept() {
                            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
                            self.next_conn += 1;
                            self.conns.insert(
                                self.next_conn,
                                Conn {
                                    stream,
                                    rbuf: Vec::new(),
                                    fds: VecDeque::new(),
                                    busy: false,
                                },
                            );
                        }
                    }
                    Source::Signals => {
                        while let Ok(Some(info)) = sfd.read_signal() {
                            if info.ssi_signo == libc::SIGTERM as u32
                                || info.ssi_signo == libc::SIGINT as u32
                            {
                                let _ = self.shutdown(false);
                            }
                        }
                        self.reap();
                    }
                    Source::Conn(id) => self.on_conn(id, rev),
                    Source::CtrPipe(ci, pi) => {
                        self.pump_container(&order[ci], pi);
                    }
                    Source::ExecPipe(ei, is_err) => {
                        if self.pump_exec(ei, is_err) {
                            closed_exec.push((ei, is_err));
                        }
                    }
                    Source::CtrStdin(ci) => self.flush_stdin(&order[ci]),
                    Source::AttachIn(ci, aid) => self.pump_attach_input(&order[ci], aid),
                    Source::AttachOut(ci, aid) => {
                        if rev.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                            self.detach_client(&order[ci], aid);
                        }
                    }
                }
            }
            for c in self.containers.values_mut() {
                c.pipes.retain(|p| !p.eof);
                c.attachers.retain(|a| !a.gone);
            }
            for (ei, is_err) in closed_exec {
                if let Some(e) = self.execs.iter_mut().find(|e| e.pid == ei) {
                    if is_err {
                        e.err = None;
                    } else {
                        e.out = None;
                    }
                }
            }
            self.check_timeouts();
            self.reap();
        }
        Ok(())
    }

    pub(super) fn pump_exec(&mut self, pid: i32, is_err: bool) -> bool {
        let Some(e) = self.execs.iter_mut().find(|e| e.pid == pid) else { return false };
        let (f, acc) =
            if is_err { (&mut e.err, &mut e.stderr) } else { (&mut e.out, &mut e.stdout) };
        let Some(f) = f else { return false };
        match f.read(&mut self.buf) {
            Ok(0) => true,
            Ok(n) => {
                let room = EXEC_OUTPUT_MAX.saturating_sub(acc.len());
                acc.extend_from_slice(&self.buf[..n.min(room)]);
                false
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                false
            }
            Err(_) => true,
        }
    }

    pub(super) fn check_timeouts(&mut self) {
        let now = Instant::now();
        for e in &mut self.execs {
            if e.deadline.is_some_and(|d| d <= now) && !e.timed_out {
                e.timed_out = true;
                let _ = nix::sys::signal::kill(Pid::from_raw(e.pid), Signal::SIGKILL);
            }
        }
    }

    pub(super) fn reap(&mut self) {
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if let Some(id) = self
                .containers
                .iter()
                .find(|(_, c)| c.pid == pid && c.status != Status::Stopped)
                .map(|(k, _)| k.clone())
            {
                self.container_exited(&id, code);
            } else if self.pod_init == Some(pid) {
                // Killed from outside: the pod's PID namespace is gone with it.
                self.pod_init = None;
            } else if let Some(ei) = self.execs.iter().position(|e| e.pid == pid) {
                let mut e = self.execs.remove(ei);
                if !e.streaming {
                    drain_exec(&mut e, &mut self.buf);
                }
                let result = ExecResult {
                    exit_code: code,
                    stdout: e.stdout,
                    stderr: e.stderr,
                    timed_out: e.timed_out,
                };
                self.respond(e.conn, Ok(Response::Exec(result)));
            }
        }
    }

    pub(super) fn container_exited(&mut self, id: &str, code: i32) {
        // The OOM count first, before draining output: with the systemd driver the
        // container's scope, and its memory.events, goes as soon as systemd sees it empty.
        let oom_killed = self.containers.get(id).and_then(|c| {
            let cg = c.cgroup()?;
            Some(oom_verdict(
                code,
                c.slice_oom_base,
                cgroups::scope_oom_kills(&cg),
                || cgroups::slice_oom_kills(&cg),
                || cgroups::oom_kills(&cg),
            ))
        });
        self.drain_container(id);
        let paths = self.paths.clone();
        let Some(c) = self.containers.get_mut(id) else { return };
        c.status = Status::Stopped;
        c.exit_code = Some(code);
        c.finished_at_ns = now_ns();
        c.runner.exited();
        c.stdin = None;
        c.stdin_pending.clear();
        // Closing the output ends tells each attached session the container is gone.
        c.attachers.clear();
        if let Some(oom_killed) = oom_killed {
            c.oom_killed = oom_killed;
        }
        let rec = ExitRecord {
            exit_code: code,
            started_at_ns: c.started_at_ns,
            finished_at_ns: c.finished_at_ns,
            oom_killed: c.oom_killed,
            pid: c.pid,
        };
        let tmp = paths.exits().join(format!(".{id}.tmp"));
        let written = serde_json::to_vec(&rec)
            .map_err(io::Error::other)
            .and_then(|b| fs::write(&tmp, b))
            .and_then(|()| fs::rename(&tmp, paths.exit_file(id)));
        if let Err(e) = written {
            eprintln!("berth-shim: record exit of {id}: {e}");
        }
        let state = c.state(id);
        for w in std::mem::take(&mut c.waiters) {
            self.respond(w, Ok(Response::State(state.clone())));
        }
    }

    pub(super) fn on_conn(&mut self, id: u64, rev: PollFlags) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.busy {
            if rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                // The client went away while waiting for Wait/Exec: forget it (the answer
                // is dropped; an ExecSync still runs to its end or timeout, while a
                // streaming exec has lost its session and is killed).
                self.conns.remove(&id);
                for e in self.execs.iter().filter(|e| e.streaming && e.conn == id) {
                    let _ = nix::sys::signal::kill(Pid::from_raw(e.pid), Signal::SIGKILL);
                }
            }
            return;
        }
        let n = match crate::shim::fdpass::recv_with_fds(&conn.stream, &mut self.buf, &mut conn.fds)
        {
            Ok(0) | Err(_) => {
                self.conns.remove(&id);
                return;
            }
            Ok(n) => n,
        };
        conn.rbuf.extend_from_slice(&self.buf[..n]);
        loop {
            let Some(conn) = self.conns.get_mut(&id) else { return };
            if conn.busy {
                return;
            }
            let frame: RequestFrame = match take_frame(&mut conn.rbuf) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    let resp = ResponseFrame {
                        v: PROTOCOL_VERSION,
                        result: WireResult::Err {
                            kind: ErrorKind::InvalidArgument,
                            message: e.to_string(),
                        },
                    };
                    let _ = write_frame(&mut conn.stream, &resp);
                    self.conns.remove(&id);
                    return;
                }
            };
            conn.busy = true;
            // Descriptors came with the frame's first byte, so they are queued by now.
            let wanted = frame.req.fd_count();
            if conn.fds.len() < wanted {
                conn.fds.clear();
                let msg = format!("the request needs {wanted} descriptors");
                self.respond(id, fail(ErrorKind::InvalidArgument, msg));
                continue;
            }
            let fds: Vec<OwnedFd> = conn.fds.drain(..wanted).collect();
            if frame.v != PROTOCOL_VERSION {
                let msg = format!(
                    "protocol version {} not supported (shim speaks {PROTOCOL_VERSION})",
                    frame.v
                );
                self.respond(id, fail(ErrorKind::InvalidArgument, msg));
                continue;
            }
            if let Some(reply) = self.handle(id, frame.req, fds) {
                self.respond(id, reply);
            }
        }
    }

    pub(super) fn respond(&mut self, conn: u64, reply: Reply) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.busy = false;
        let result = match reply {
            Ok(r) => WireResult::Ok(r),
            Err((kind, message)) => WireResult::Err { kind, message },
        };
        if write_frame(&mut c.stream, &ResponseFrame { v: PROTOCOL_VERSION, result }).is_err() {
            self.conns.remove(&conn);
        }
    }
}

fn drain_exec(e: &mut ExecJob, buf: &mut [u8]) {
    for (f, acc) in [(&mut e.out, &mut e.stdout), (&mut e.err, &mut e.stderr)] {
        if let Some(file) = f {
            while let Ok(n) = file.read(buf) {
                if n == 0 {
                    break;
                }
                let room = EXEC_OUTPUT_MAX.saturating_sub(acc.len());
                acc.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        *f = None;
    }
}

/// Whether a container that exited with `code` was killed by the OOM killer, from what its
/// cgroup counted. A systemd scope goes as soon as systemd sees it empty, which races with
/// this reading: a count read from the scope is final (it is not read twice, as the scope
/// may be gone by the second read); once the scope is gone, the pod slice's count grown
/// past what it was at the container's creation (`slice_base`) and death by SIGKILL, the
/// OOM killer's signal, tell it. (Another container of the pod killed by the OOM killer at
/// the same moment could be mistaken for it; reading the scope first makes that rare.)
/// `cgroupfs` counts a cgroup berth itself owns and removes.
fn oom_verdict(
    code: i32,
    slice_base: Option<u64>,
    scope: Option<u64>,
    slice_now: impl FnOnce() -> Option<u64>,
    cgroupfs: impl FnOnce() -> u64,
) -> bool {
    match (scope, slice_base) {
        (Some(n), _) => n > 0,
        (None, Some(base)) => code == 128 + libc::SIGKILL && slice_now().is_some_and(|n| n > base),
        (None, None) => cgroupfs() > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::oom_verdict;

    const KILLED: i32 = 137;
    fn unread() -> Option<u64> {
        panic!("read when the scope's own count was at hand")
    }

    #[test]
    fn a_scope_read_before_systemd_removes_it_decides() {
        assert!(oom_verdict(KILLED, Some(0), Some(1), unread, || panic!("cgroupfs read")));
        assert!(!oom_verdict(KILLED, Some(0), Some(0), unread, || panic!("cgroupfs read")));
    }

    #[test]
    fn a_scope_already_gone_is_judged_by_its_slice() {
        assert!(oom_verdict(KILLED, Some(2), None, || Some(3), || 0));
        assert!(!oom_verdict(KILLED, Some(2), None, || Some(2), || 0));
        assert!(!oom_verdict(KILLED, Some(2), None, || None, || 0));
        // Grown, but the container ended on its own: another container's OOM kill.
        assert!(!oom_verdict(1, Some(2), None, || Some(3), || 0));
    }

    #[test]
    fn a_cgroupfs_cgroup_counts_its_own() {
        assert!(oom_verdict(KILLED, None, None, || None, || 1));
        assert!(!oom_verdict(KILLED, None, None, || None, || 0));
    }
}
