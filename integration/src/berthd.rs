//! A real `berthd` process for a test: temporary root, state and socket, connected CRI
//! clients, and a clean stop on drop.
//!
//! Tests talk to it exactly as the kubelet would: gRPC over the unix socket.

use berth_proto::{ImageServiceClient, RuntimeServiceClient};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::transport::Channel;

/// How long berthd may take to answer its first call.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long berthd may take to exit after SIGTERM before the harness kills it.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The `berthd` binary under test: `$BERTHD_BIN`, else the one cargo built next to the
/// test executable (`target/<profile>/berthd`).
pub fn berthd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("BERTHD_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/berthd
    let bin = exe.parent().and_then(Path::parent).map(|dir| dir.join("berthd"));
    match bin {
        Some(bin) if bin.exists() => bin,
        _ => panic!(
            "berthd binary not found next to {}; build it first (`cargo build --workspace`) \
             or set BERTHD_BIN",
            exe.display()
        ),
    }
}

/// Integration tests drive namespaces, mounts and cgroups: they must run as root, and a
/// test that silently skipped would report a success it never checked.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "berth's integration tests must run as root (they start a real berthd)"
    );
}

/// How to start berthd.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Text of a config file passed with `--config` (root/state/socket still come from
    /// the harness's flags, which override the file).
    pub config: Option<String>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Extra environment variables (e.g. crash points).
    pub env: Vec<(String, String)>,
    /// berthd's directory (socket, log, `root/`, `state/`) when it must outlive the test
    /// process, as across the VM lane's power cuts; default: a temporary one.
    pub dir: Option<PathBuf>,
}

/// berthd's directory: a temporary one deleted with the harness, or one given to it.
enum Dir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }
}

pub struct Berthd {
    /// The clients' connections live on this runtime, not the test's, so they keep
    /// answering berthd (HTTP/2 graceful close waits for the client's acknowledgement)
    /// even while the test thread blocks, as it must in `Drop`.
    io: Option<tokio::runtime::Runtime>,
    dir: Dir,
    child: Option<Child>,
    options: Options,
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    /// A private bridge/subnet/nft table when the test's config names none, so no test
    /// touches the host's `berth0`; deleted after berthd stops.
    _net: Option<crate::leaks::NetEnv>,
}

impl Berthd {
    /// Starts berthd on its defaults (with temporary directories) and connects.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(mut options: Options) -> Self {
        require_root();
        let text = options.config.get_or_insert_with(String::new);
        let net = (!text.contains("[network]")).then(crate::leaks::NetEnv::new);
        if let Some(net) = &net {
            text.push_str(&format!("\n{}", net.config_toml()));
        }
        let dir = match &options.dir {
            Some(p) => {
                fs::create_dir_all(p).expect("berthd dir");
                Dir::Kept(p.clone())
            }
            None => {
                Dir::Temp(tempfile::Builder::new().prefix("berth-it-").tempdir().expect("temp dir"))
            }
        };
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("client runtime");
        let child = spawn(dir.path(), &options);
        let (runtime, image) = connect_on(&io, dir.path().join("berth.sock"), &child).await;
        Self { io: Some(io), dir, child: Some(child), options, runtime, image, _net: net }
    }

    /// A RuntimeService client on this daemon's socket.
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// An ImageService client on this daemon's socket.
    pub fn image(&self) -> ImageServiceClient<Channel> {
        self.image.clone()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("berth.sock")
    }

    pub fn root_dir(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Everything berthd wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The command line that would start another berthd on the same directories, for
    /// tests that check how a second daemon behaves.
    pub fn command(&self) -> Command {
        command(self.dir.path(), &self.options)
    }

    /// Sends SIGTERM and waits for berthd to exit; kills it if it does not in time.
    ///
    /// Async so this test's client connections keep running while berthd shuts down:
    /// HTTP/2's graceful close waits for the client to acknowledge it.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("berthd is running");
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + crate::time_scale::scaled(STOP_TIMEOUT);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("wait for berthd") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = child.wait();
        panic!(
            "berthd did not exit within {:?} of SIGTERM",
            crate::time_scale::scaled(STOP_TIMEOUT)
        );
    }

    /// SIGKILLs berthd, as a crash would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("berthd is running");
        stop_child(&mut child, Signal::SIGKILL, crate::time_scale::scaled(STOP_TIMEOUT));
    }

    /// Changes the environment the next [`restart`](Self::restart) gives berthd.
    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.options.env = env;
    }

    /// Starts berthd again on the same directories (after [`stop`](Self::stop) or
    /// [`kill`](Self::kill)) and reconnects the clients.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill berthd before restarting it");
        let child = spawn(self.dir.path(), &self.options);
        let io = self.io.as_ref().expect("client runtime");
        let (runtime, image) = connect_on(io, self.socket(), &child).await;
        self.child = Some(child);
        self.runtime = runtime;
        self.image = image;
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Signal::SIGTERM, crate::time_scale::scaled(STOP_TIMEOUT));
        }
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
        if std::thread::panicking() {
            eprintln!("---- berthd log ({}) ----\n{}", self.dir.path().display(), self.log());
        }
        // A test that failed half-way leaves its pods: end their shims and unmount what
        // they had, so one failure does not spill into the next test or the machine.
        kill_shims_of(&self.state_dir());
        for m in mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// SIGKILLs every `berth-shim` serving a pod under `state`, and its children (a pod's
/// init, containers still running).
fn kill_shims_of(state: &Path) {
    let needle = state.display().to_string();
    let mut procs = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        // The parent pid is the field after the parenthesised command name.
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok())
            .unwrap_or(0);
        procs.push((pid, ppid, cmdline.contains("berth-shim") && cmdline.contains(&needle)));
    }
    let shims: Vec<i32> = procs.iter().filter(|p| p.2).map(|p| p.0).collect();
    for (pid, ppid, is_shim) in procs {
        if is_shim || shims.contains(&ppid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Mount points under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out
}

fn command(dir: &Path, options: &Options) -> Command {
    let mut cmd = Command::new(berthd_bin());
    let mut config = options.config.clone();
    if crate::leaks::systemd_driver() {
        let text = config.get_or_insert_with(String::new);
        if !text.contains("[cgroup]") {
            text.push_str("\n[cgroup]\ndriver = \"systemd\"\n");
        }
    }
    if let Some(config) = &config {
        let path = dir.join("config.toml");
        fs::write(&path, config).expect("write config");
        cmd.arg("--config").arg(path);
    }
    cmd.arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("berth.sock"))
        .args(&options.args)
        .stdin(Stdio::null());
    // Never read the host's /etc/berth/config.toml by accident.
    if config.is_none() {
        cmd.arg("--config").arg(dir.join("no-config.toml"));
        fs::write(dir.join("no-config.toml"), "").expect("write empty config");
    }
    cmd
}

fn spawn(dir: &Path, options: &Options) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.join("berthd.log"))
        .expect("open berthd log");
    command(dir, options)
        .env("RUST_LOG", std::env::var("BERTHD_LOG").unwrap_or_else(|_| "debug".into()))
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", berthd_bin().display()))
}

async fn connect_on(
    io: &tokio::runtime::Runtime,
    socket: PathBuf,
    child: &Child,
) -> (RuntimeServiceClient<Channel>, ImageServiceClient<Channel>) {
    let pid = child.id();
    io.spawn(async move { connect(&socket, pid).await }).await.expect("connect task")
}

async fn connect(
    socket: &Path,
    pid: u32,
) -> (RuntimeServiceClient<Channel>, ImageServiceClient<Channel>) {
    let deadline = Instant::now() + crate::time_scale::scaled(START_TIMEOUT);
    loop {
        if socket.exists() {
            if let Ok(channel) = berth_proto::connect_unix(socket.to_string_lossy()).await {
                let mut runtime = RuntimeServiceClient::new(channel.clone());
                if runtime.version(berth_proto::VersionRequest::default()).await.is_ok() {
                    return (runtime, ImageServiceClient::new(channel));
                }
            }
        }
        assert!(
            pid_alive(pid),
            "berthd exited before answering on {}; see its log",
            socket.display()
        );
        assert!(
            Instant::now() < deadline,
            "berthd did not answer on {} in {:?}",
            socket.display(),
            crate::time_scale::scaled(START_TIMEOUT)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still "exists" for kill(0); read its state to tell.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn stop_child(child: &mut Child, signal: Signal, grace: Duration) -> ExitStatus {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, signal);
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = kill(pid, Signal::SIGKILL);
                return child.wait().expect("wait for berthd");
            }
        }
    }
}
