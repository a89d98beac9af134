//! Starting the `docker-registry` process itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

const BINARY: &str = "/usr/bin/docker-registry";
/// Port picking can lose a race against another process; try a few ports.
const ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) struct Spawn {
    pub dir: PathBuf,
    pub basic_auth: Option<(String, String)>,
}

impl Spawn {
    /// Starts the registry on a free loopback port and waits until `/v2/` answers.
    pub fn start(&self) -> Result<(Child, SocketAddr)> {
        std::fs::create_dir_all(self.dir.join("storage"))?;
        let htpasswd = match &self.basic_auth {
            Some((user, password)) => Some(self.write_htpasswd(user, password)?),
            None => None,
        };
        let mut last_err = anyhow!("no attempt made");
        for _ in 0..ATTEMPTS {
            // The registry config cannot say "port 0", so take a port the kernel
            // says is free and hand it over; a conflict is retried below.
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let config = self.write_config(addr, htpasswd.as_ref())?;
            let mut child = self.spawn(&config)?;
            match wait_ready(&mut child, addr, &self.dir.join("registry.log")) {
                Ok(()) => return Ok((child, addr)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log =
                        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
                    if !log.contains("address already in use") {
                        return Err(e.context(format!("registry log:\n{log}")));
                    }
                    last_err = e;
                }
            }
        }
        Err(last_err.context("no free port for the registry"))
    }

    fn write_htpasswd(&self, user: &str, password: &str) -> Result<PathBuf> {
        // Cost 4 is the lowest bcrypt cost Go accepts; tests need speed, not strength.
        let hash = bcrypt::hash(password, 4).context("bcrypt")?;
        let path = self.dir.join("htpasswd");
        std::fs::write(&path, format!("{user}:{hash}\n"))?;
        Ok(path)
    }

    fn write_config(&self, addr: SocketAddr, htpasswd: Option<&PathBuf>) -> Result<PathBuf> {
        let storage = self.dir.join("storage");
        // No `cache:` section on purpose: without a blob-descriptor cache the
        // registry stats blob files on every request, so tests may rewrite them.
        let mut config = format!(
            "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: berth-test-secret
",
            storage = storage.display()
        );
        if let Some(path) = htpasswd {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: berth-test-registry\n    path: {}\n",
                path.display()
            ));
        }
        let path = self.dir.join("config.yml");
        std::fs::write(&path, config)?;
        Ok(path)
    }

    fn spawn(&self, config: &Path) -> Result<Child> {
        let log = std::fs::File::create(self.dir.join("registry.log"))?;
        let mut cmd = Command::new(BINARY);
        cmd.arg("serve")
            .arg(config)
            .stdin(Stdio::null())
            // Files, not pipes: nobody has to drain them and they survive for debugging.
            .stdout(log.try_clone()?)
            .stderr(log);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure only calls async-signal-safe functions (prctl,
        // getppid, _exit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Die with the thread that spawned us, even on SIGKILL of the tests.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        cmd.spawn().with_context(|| format!("spawn {BINARY}"))
    }
}

/// Waits until the registry logs that it listens on `addr` (so a foreign server
/// that grabbed the port cannot fool us) and `GET /v2/` gets an HTTP answer
/// (200, or 401 with auth).
fn wait_ready(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<()> {
    let deadline = Instant::now() + crate::time_scale::scaled(READY_TIMEOUT);
    let listening = format!("listening on {addr}");
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("docker-registry exited early with {status}");
        }
        let ours = std::fs::read_to_string(log).map(|l| l.contains(&listening)).unwrap_or(false);
        if ours && probe(addr).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("docker-registry did not answer on {addr} within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn probe(addr: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        bail!("not an HTTP answer")
    }
}
