//! The requests berthd sends: create, start, signal, delete, exec and the pod's init.

use super::runner::{self, Launched};
use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use crate::clock::now_ns;
use crate::executor::{cgroups, Stdio};
use crate::shim::log::LogFile;
use crate::shim::protocol::*;
use crate::shim::valid_id;

use super::pipes::pipe_nb;
use super::state::{fail, Container, ExecJob, Reply, Shim};

impl Shim {
    /// Handles one request; `None` when the answer comes later (Wait, Exec).
    pub(super) fn handle(&mut self, conn: u64, req: Request, fds: Vec<OwnedFd>) -> Option<Reply> {
        Some(match req {
            Request::Hello => {
                Ok(Response::Hello { version: PROTOCOL_VERSION, pid: std::process::id() as i32 })
            }
            Request::Create(c) => self.create(c),
            Request::Start { id } => self.start(&id),
            Request::Kill { id, signal, all } => self.kill(&id, signal, all),
            Request::State { id } => self.get(&id).map(|c| Response::State(c.state(&id))),
            Request::List => {
                let mut v: Vec<ContainerState> =
                    self.containers.iter().map(|(k, c)| c.state(k)).collect();
                v.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(Response::List(v))
            }
            Request::Wait { id } => match self.containers.get_mut(&id) {
                None => fail(ErrorKind::NotFound, format!("container {id} not found")),
                Some(c) if c.status == Status::Stopped => Ok(Response::State(c.state(&id))),
                Some(c) => {
                    c.waiters.push(conn);
                    return None;
                }
            },
            Request::Delete { id } => self.delete(&id),
            Request::ReopenLog { id } => match self.containers.get_mut(&id) {
                None => fail(ErrorKind::NotFound, format!("container {id} not found")),
                Some(c) => c
                    .log
                    .reopen()
                    .map(|()| Response::Ok)
                    .or_else(|e| fail(ErrorKind::Internal, format!("reopen log: {e}"))),
            },
            Request::Exec(e) => match self.exec(conn, e) {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            Request::Shutdown { force } => self.shutdown(force),
            Request::ExecStream(e) => match self.exec_stream(conn, e, fds) {
                Ok(()) => return None,
                Err(e) => Err(e),
            },
            Request::Attach { id, stdin, stderr } => self.attach(&id, stdin, stderr, fds),
            Request::Resize { id, width, height } => self.resize(&id, width, height),
            Request::PodInit => self.start_pod_init(None),
            Request::PodInitInUserns { userns } => self.start_pod_init(Some(&userns)),
            Request::StopPodInit => {
                self.stop_pod_init();
                Ok(Response::Ok)
            }
        })
    }

    pub(super) fn get(&self, id: &str) -> std::result::Result<&Container, (ErrorKind, String)> {
        self.containers.get(id).ok_or((ErrorKind::NotFound, format!("container {id} not found")))
    }

    /// A container that processes can be run in.
    fn running(&self, id: &str) -> std::result::Result<&Container, (ErrorKind, String)> {
        let c = self.get(id)?;
        if c.status != Status::Running {
            return Err((ErrorKind::FailedPrecondition, format!("container {id} is not running")));
        }
        Ok(c)
    }

    pub(super) fn create(&mut self, req: CreateRequest) -> Reply {
        let id = req.container_id.clone();
        if !valid_id(&id) {
            return fail(ErrorKind::InvalidArgument, format!("invalid container id {id:?}"));
        }
        if self.containers.contains_key(&id) {
            return fail(ErrorKind::AlreadyExists, format!("container {id} already exists"));
        }
        let config = req.bundle.join("config.json");
        let spec: Spec = match fs::read(&config)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                return fail(ErrorKind::InvalidArgument, format!("read {}: {e}", config.display()))
            }
        };
        let log = LogFile::open(&req.log_path).or_else(|e| {
            fail(ErrorKind::InvalidArgument, format!("open log {}: {e}", req.log_path.display()))
        })?;
        let created_at_ns = now_ns();
        let cgroup = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        let mut runner = runner::for_request(req.runtime.as_ref(), &spec, self.paths.dir());
        let Launched { pid, pipes, stdin } =
            match runner.create(&id, &spec, &req.bundle, req.tty, req.stdin) {
                Ok(launched) => launched,
                Err(e) => {
                    // The executor or runtime may have made the cgroup before it failed.
                    if let Some(cg) = &cgroup {
                        self.reap();
                        let _ = cgroups::remove(cg);
                    }
                    return fail(ErrorKind::Internal, e);
                }
            };
        let master =
            if req.tty { pipes.first().and_then(|p| p.file.try_clone().ok()) } else { None };
        if let Some(f) = &stdin {
            // Attached input is written without blocking; see `stdin_pending`.
            let _ =
                nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK));
        }
        self.containers.insert(
            id,
            Container {
                spec,
                status: Status::Created,
                pid,
                exit_code: None,
                created_at_ns,
                started_at_ns: 0,
                finished_at_ns: 0,
                oom_killed: false,
                slice_oom_base: cgroup.as_deref().and_then(cgroups::slice_oom_kills),
                log,
                pipes,
                stdin,
                stdin_pending: Vec::new(),
                stdin_closing: false,
                stdin_once: req.stdin_once,
                master,
                attachers: Vec::new(),
                waiters: Vec::new(),
                runner,
                bundle: req.bundle.clone(),
            },
        );
        Ok(Response::Created { pid })
    }

    pub(super) fn start(&mut self, id: &str) -> Reply {
        let c = self
            .containers
            .get_mut(id)
            .ok_or((ErrorKind::NotFound, format!("container {id} not found")))?;
        if c.status != Status::Created {
            return fail(
                ErrorKind::FailedPrecondition,
                format!("container {id} is {:?}, not created", c.status),
            );
        }
        c.runner.start(id).or_else(|e| fail(ErrorKind::Internal, e))?;
        c.started_at_ns = now_ns();
        c.status = Status::Running;
        Ok(Response::Ok)
    }

    pub(super) fn kill(&mut self, id: &str, signal: i32, all: bool) -> Reply {
        let c = self.get(id)?;
        let sig = Signal::try_from(signal)
            .or_else(|_| fail(ErrorKind::InvalidArgument, format!("bad signal {signal}")))?;
        if c.status == Status::Stopped {
            return Ok(Response::Ok);
        }
        let mut pids = vec![c.pid];
        if all {
            if let Some(cg) = c.cgroup() {
                pids.extend(cgroups::pids(&cg));
            }
        }
        for p in pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), sig);
        }
        Ok(Response::Ok)
    }

    pub(super) fn delete(&mut self, id: &str) -> Reply {
        let c = self.get(id)?;
        if c.status == Status::Running {
            return fail(ErrorKind::FailedPrecondition, format!("container {id} is running"));
        }
        if c.status == Status::Created {
            let pid = Pid::from_raw(c.pid);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        let mut c = self.containers.remove(id).expect("checked above");
        c.runner.delete(id);
        for w in &c.waiters {
            self.respond(*w, fail(ErrorKind::NotFound, format!("container {id} was deleted")));
        }
        let _ = fs::remove_file(self.paths.exit_file(id));
        if let Some(cg) = c.cgroup() {
            for p in cgroups::pids(&cg) {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            self.reap();
            cgroups::remove(&cg).or_else(|e| fail(ErrorKind::Internal, e.0))?;
        }
        Ok(Response::Ok)
    }

    pub(super) fn exec(
        &mut self,
        conn: u64,
        req: ExecRequest,
    ) -> std::result::Result<(), (ErrorKind, String)> {
        let c = self.running(&req.container_id)?;
        let process: Process = serde_json::from_value(req.process)
            .or_else(|e| fail(ErrorKind::InvalidArgument, format!("process: {e}")))?;
        let (out_r, out_w) = pipe_nb().or_else(|e| fail(ErrorKind::Internal, e.to_string()))?;
        let (err_r, err_w) = pipe_nb().or_else(|e| fail(ErrorKind::Internal, e.to_string()))?;
        let null = OwnedFd::from(
            File::open("/dev/null").or_else(|e| fail(ErrorKind::Internal, e.to_string()))?,
        );
        let stdio = Stdio { stdin: null, stdout: out_w, stderr: err_w, tty: false };
        let pid = c
            .runner
            .exec(&req.container_id, c.pid, &c.spec, &c.bundle, process, stdio)
            .or_else(|e| fail(ErrorKind::Internal, e))?;
        let deadline =
            (req.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(req.timeout_ms));
        self.execs.push(ExecJob {
            conn,
            streaming: false,
            pid,
            out: Some(File::from(out_r)),
            err: Some(File::from(err_r)),
            stdout: Vec::new(),
            stderr: Vec::new(),
            deadline,
            timed_out: false,
        });
        Ok(())
    }

    pub(super) fn exec_stream(
        &mut self,
        conn: u64,
        req: ExecStreamRequest,
        fds: Vec<OwnedFd>,
    ) -> std::result::Result<(), (ErrorKind, String)> {
        let c = self.running(&req.container_id)?;
        let process: Process = serde_json::from_value(req.process)
            .or_else(|e| fail(ErrorKind::InvalidArgument, format!("process: {e}")))?;
        let [stdin, stdout, stderr]: [OwnedFd; 3] =
            fds.try_into().or_else(|_| fail(ErrorKind::InvalidArgument, "three descriptors"))?;
        let stdio = Stdio { stdin, stdout, stderr, tty: req.tty };
        let pid = c
            .runner
            .exec(&req.container_id, c.pid, &c.spec, &c.bundle, process, stdio)
            .or_else(|e| fail(ErrorKind::Internal, e))?;
        self.execs.push(ExecJob {
            conn,
            streaming: true,
            pid,
            out: None,
            err: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            deadline: None,
            timed_out: false,
        });
        Ok(())
    }

    pub(super) fn start_pod_init(&mut self, userns: Option<&Path>) -> Reply {
        if let Some(pid) = self.pod_init {
            return Ok(Response::PodInit { pid });
        }
        match crate::shim::pod_init::spawn(userns) {
            Ok(pid) => {
                self.pod_init = Some(pid);
                Ok(Response::PodInit { pid })
            }
            Err(e) => fail(ErrorKind::Internal, format!("starting the pod's init: {e}")),
        }
    }

    pub(super) fn stop_pod_init(&mut self) {
        if let Some(pid) = self.pod_init.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }

    pub(super) fn shutdown(&mut self, force: bool) -> Reply {
        let live: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.status != Status::Stopped)
            .map(|(k, _)| k.clone())
            .collect();
        if !live.is_empty() && !force {
            return fail(
                ErrorKind::FailedPrecondition,
                format!("containers still running: {}", live.join(", ")),
            );
        }
        for id in &live {
            let pid = Pid::from_raw(self.containers[id].pid);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            self.container_exited(id, 137);
        }
        for e in &self.execs {
            let _ = nix::sys::signal::kill(Pid::from_raw(e.pid), Signal::SIGKILL);
        }
        self.stop_pod_init();
        self.quit = true;
        Ok(Response::Ok)
    }
}
