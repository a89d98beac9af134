//! The shim process: start-up (detach, subreaper, socket) and its single-threaded
//! poll(2) loop over the socket, a signalfd for SIGCHLD/SIGTERM, container output pipes
//! and exec pipes.
//!
//! Here: start-up. [`state`]: what the shim holds; [`event_loop`]: the loop, reaping and
//! connections; [`handlers`]: the requests; [`runner`]: who runs a container's processes
//! (the native executor or an OCI runtime); [`stdio`]: container output, attach and
//! terminals, over the descriptors of [`pipes`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::protocol::*;
use super::ShimPaths;

mod anon_pages;
mod code_pages;
mod event_loop;
mod handlers;
mod pipes;
mod runner;
mod state;
mod stdio;

use state::Shim;

pub(crate) use pipes::set_window_size;

/// `berth-shim --dir <shim dir>`: starts the shim. Returns the exit code of the process
/// that berthd started (0 once the detached shim is serving).
pub fn main_with_args(args: &[String]) -> i32 {
    let mut dir = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = it.next().map(PathBuf::from),
            "--version" => {
                println!("berth-shim protocol {PROTOCOL_VERSION}");
                return 0;
            }
            _ => {}
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: berth-shim --dir <shim directory>");
        return 2;
    };
    match start(ShimPaths::from_dir(dir)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            1
        }
    }
}

fn start(paths: ShimPaths) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(paths.exits())?;
    let sock = paths.socket();
    if UnixStream::connect(&sock).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a shim is already serving this directory",
        ));
    }
    let _ = fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)?;
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the shim binary is single-threaded here (nothing has spawned a thread).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(ready_w);
            let mut msg = String::new();
            File::from(ready_r).read_to_string(&mut msg)?;
            if msg == "ok" {
                Ok(())
            } else {
                Err(io::Error::other(format!("shim failed to start: {msg}")))
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            let mut ready = File::from(ready_w);
            match detach(&paths) {
                Ok(sfd) => {
                    let _ = ready.write_all(b"ok");
                    drop(ready);
                    crate::executor::warm_caches();
                    let mut shim = Shim {
                        paths,
                        containers: HashMap::new(),
                        execs: Vec::new(),
                        conns: HashMap::new(),
                        next_conn: 0,
                        next_attacher: 0,
                        buf: vec![0; 32 * 1024],
                        quit: false,
                        pod_init: None,
                        code_in_use: true,
                        release_code: false,
                    };
                    let code = match shim.run(&listener, &sfd) {
                        Ok(()) => 0,
                        Err(e) => {
                            eprintln!("berth-shim: {e}");
                            1
                        }
                    };
                    let _ = fs::remove_file(shim.paths.socket());
                    let _ = fs::remove_file(shim.paths.pid_file());
                    std::process::exit(code)
                }
                Err(e) => {
                    let _ = ready.write_all(e.to_string().as_bytes());
                    std::process::exit(1)
                }
            }
        }
    }
}

fn detach(paths: &ShimPaths) -> io::Result<SignalFd> {
    nix::unistd::setsid()?;
    std::env::set_current_dir(paths.dir())?;
    let log = OpenOptions::new().create(true).append(true).mode(0o600).open(paths.log())?;
    let null = File::open("/dev/null")?;
    // SAFETY: dup2 onto the standard descriptors.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    fs::write(paths.pid_file(), std::process::id().to_string())?;
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block()?;
    Ok(SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?)
}

use std::os::unix::fs::OpenOptionsExt;
