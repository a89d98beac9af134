//! Who runs a container's processes: berth's own executor ([`Native`]) or an OCI runtime
//! binary ([`OciRuntime`], the pod's runtime handler). The choice is made once, when the
//! container is created ([`for_request`]); every later step asks the container's runner.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Process, Spec};

use super::pipes::make_stdio;
use super::pipes::Pipe;
use crate::executor::{self, Stdio};
use crate::shim::log::{LineSplitter, Stream};
use crate::shim::oci_runtime::OciRuntime;

/// A created container's process and its stdio as the shim holds it.
pub(super) struct Launched {
    pub pid: i32,
    /// Output the shim copies to the log and attached clients (with a tty: the master).
    pub pipes: Vec<Pipe>,
    /// The container's stdin, when it has one.
    pub stdin: Option<File>,
}

pub(super) trait Runner {
    /// Makes the container's process, set up and waiting for [`Runner::start`]. On
    /// failure nothing of the runner's own is left (the cgroup is the caller's).
    fn create(
        &mut self,
        id: &str,
        spec: &Spec,
        bundle: &Path,
        tty: bool,
        stdin: bool,
    ) -> Result<Launched, String>;

    /// Lets the created process exec the container's program.
    fn start(&mut self, id: &str) -> Result<(), String>;

    /// Starts `process` in the running container (its namespaces, cgroup and
    /// confinement) on `stdio`; returns its host pid, which the shim reaps.
    fn exec(
        &self,
        id: &str,
        container_pid: i32,
        spec: &Spec,
        bundle: &Path,
        process: Process,
        stdio: Stdio,
    ) -> Result<i32, String>;

    /// The container's process is gone: what the runner held for it is let go.
    fn exited(&mut self) {}

    /// The container is deleted: the runner forgets it.
    fn delete(&mut self, _id: &str) {}
}

/// The runner a create request asks for: its OCI runtime binary, or the native one.
/// `shim_dir` holds an OCI runtime's state (`--root`).
pub(super) fn for_request(
    runtime: Option<&PathBuf>,
    spec: &Spec,
    shim_dir: &Path,
) -> Box<dyn Runner> {
    let Some(binary) = runtime else { return Box::<Native>::default() };
    // A cgroups path in systemd form: the runtime makes the scope over D-Bus.
    let systemd = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .is_some_and(|p| crate::systemd::resolve(p).is_some());
    Box::new(OciRuntime::new(binary.clone(), shim_dir).with_systemd_cgroup(systemd))
}

/// berth's own executor: the shim forks the container's process itself.
#[derive(Default)]
pub(super) struct Native {
    /// The created process, waiting for its start.
    pending: Option<executor::Pending>,
}

impl Runner for Native {
    fn create(
        &mut self,
        _id: &str,
        spec: &Spec,
        bundle: &Path,
        tty: bool,
        stdin: bool,
    ) -> Result<Launched, String> {
        let (stdio, pipes, stdin) = make_stdio(tty, stdin).map_err(|e| format!("stdio: {e}"))?;
        let pending = executor::create(spec, bundle, stdio).map_err(|e| e.0)?;
        let pid = pending.pid.as_raw();
        self.pending = Some(pending);
        Ok(Launched { pid, pipes, stdin })
    }

    fn start(&mut self, _id: &str) -> Result<(), String> {
        match self.pending.take() {
            Some(pending) => pending.start().map_err(|e| e.0),
            None => Err("the container lost its pending process".to_string()),
        }
    }

    fn exec(
        &self,
        _id: &str,
        container_pid: i32,
        spec: &Spec,
        _bundle: &Path,
        process: Process,
        stdio: Stdio,
    ) -> Result<i32, String> {
        executor::exec(container_pid, spec, &process, stdio).map(|p| p.as_raw()).map_err(|e| e.0)
    }

    fn exited(&mut self) {
        self.pending = None;
    }
}

impl Runner for OciRuntime {
    fn create(
        &mut self,
        id: &str,
        _spec: &Spec,
        bundle: &Path,
        tty: bool,
        stdin: bool,
    ) -> Result<Launched, String> {
        // With a terminal, the runtime makes the pty and hands over its master.
        let (stdio, mut pipes, mut input) = if tty {
            (Stdio::null().map_err(|e| e.to_string())?, vec![], None)
        } else {
            make_stdio(false, stdin).map_err(|e| format!("stdio: {e}"))?
        };
        let created = match OciRuntime::create(self, id, bundle, stdio, tty) {
            Ok(created) => created,
            Err(e) => {
                let _ = OciRuntime::delete(self, id);
                return Err(e);
            }
        };
        if let Some(master) = created.console {
            let mut setup = || -> io::Result<()> {
                nix::fcntl::fcntl(
                    &master,
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )?;
                if stdin {
                    input = Some(master.try_clone()?);
                }
                pipes.push(Pipe {
                    file: master.try_clone()?,
                    split: LineSplitter::new(Stream::Stdout),
                    eof: false,
                });
                Ok(())
            };
            if let Err(e) = setup() {
                let _ = OciRuntime::delete(self, id);
                return Err(format!("console: {e}"));
            }
        }
        Ok(Launched { pid: created.pid, pipes, stdin: input })
    }

    fn start(&mut self, id: &str) -> Result<(), String> {
        OciRuntime::start(self, id)
    }

    fn exec(
        &self,
        id: &str,
        _container_pid: i32,
        _spec: &Spec,
        bundle: &Path,
        mut process: Process,
        mut stdio: Stdio,
    ) -> Result<i32, String> {
        if stdio.tty {
            // The runtime would make its own terminal and hand it over a console socket;
            // the session's terminal is already made, so the process gets it as plain
            // stdio.
            process.set_terminal(Some(false));
            stdio.tty = false;
        }
        OciRuntime::exec(self, id, bundle, &process, stdio)
    }

    fn delete(&mut self, id: &str) {
        let _ = OciRuntime::delete(self, id);
    }
}
