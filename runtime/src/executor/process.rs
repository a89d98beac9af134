//! The process a container or an exec runs: its executable found on the container's
//! PATH, its user, groups, rlimits, capabilities and AppArmor profile applied, and the
//! no_new_privs bit and seccomp filter set last, right before the exec.

use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process, Spec};

use super::error::{Ctx, Error, Result};
use super::{caps, seccomp};

/// A process ready to exec: everything but no_new_privs + seccomp (when NNP) is applied.
pub(super) struct Prepared {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    filter: Option<libseccomp::ScmpFilterContext>,
    no_new_privs: bool,
}

impl Prepared {
    pub(super) fn exec(self) -> Error {
        if self.no_new_privs {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Error(format!("set no_new_privs: {}", nix::errno::Errno::last()));
            }
            if let Some(f) = &self.filter {
                if let Err(e) = seccomp::load(f) {
                    return e;
                }
            }
        }
        // Everything but stdio is close-on-exec from here on.
        // SAFETY: close_range with the CLOEXEC flag only marks descriptors.
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
        let e = nix::unistd::execve(&self.path, &self.args, &self.env).unwrap_err();
        Error(format!("exec {}: {e}", self.path.to_string_lossy()))
    }
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error(format!("NUL byte in {s:?}")))
}

/// Finds `prog` on `PATH` (from the process env) in the current root.
fn lookup(prog: &str, env: &[String]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if prog.contains('/') {
        return match executable(Path::new(prog)) {
            Ok(true) => Ok(prog.into()),
            Ok(false) => Err(Error(format!("exec: not an executable file: {prog}"))),
            Err(_) => Err(Error(format!("exec: no such file: {prog}"))),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(prog);
        if executable(&p).unwrap_or(false) {
            return Ok(p);
        }
    }
    Err(Error(format!("exec: {prog:?} not found in PATH {path}")))
}

fn home_of(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
    })
}

fn rlimit_resource(t: PosixRlimitType) -> Option<u32> {
    use PosixRlimitType::*;
    Some(match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    })
}

/// Applies the process's cwd, rlimits, user, groups and capabilities (and seccomp when
/// no_new_privs is off, which must happen while CAP_SYS_ADMIN is still held).
pub(super) fn prepare_process(process: &Process, spec: &Spec) -> Result<Prepared> {
    let user = process.user();
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(user.uid()).unwrap_or_else(|| "/".into())));
    }
    let args: Vec<String> = process.args().clone().unwrap_or_default();
    let path = lookup(&args[0], &env)?;
    let cwd = process.cwd();
    std::fs::create_dir_all(cwd).ok();
    nix::unistd::chdir(cwd.as_path()).ctx(|| format!("chdir {}", cwd.display()))?;
    for rl in process.rlimits().iter().flatten() {
        let Some(res) = rlimit_resource(rl.typ()) else { continue };
        let lim = libc::rlimit { rlim_cur: rl.soft(), rlim_max: rl.hard() };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(res as _, &lim) } != 0 {
            return Err(Error(format!("setrlimit {:?}: {}", rl.typ(), nix::errno::Errno::last())));
        }
    }
    if let Some(mask) = user.umask() {
        // SAFETY: umask never fails.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    // The AppArmor profile takes effect at execve; set while still root, before seccomp.
    if let Some(profile) = process.apparmor_profile().as_deref().filter(|p| !p.is_empty()) {
        apparmor_on_exec(profile)?;
    }
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    let filter = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(p) => Some(seccomp::build(p)?),
        None => None,
    };
    if !no_new_privs {
        if let Some(f) = &filter {
            seccomp::load(f)?;
        }
    }
    let caps = caps::CapMasks::from_spec(process.capabilities().as_ref())?;
    caps::drop_bounding(caps.bounding)?;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<Gid> =
        user.additional_gids().iter().flatten().map(|g| Gid::from_raw(*g)).collect();
    nix::unistd::setgroups(&groups).ctx(|| "setgroups".into())?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {gid}"))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {uid}"))?;
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    caps::set_sets(&caps)?;
    caps::set_ambient(caps.ambient)?;
    Ok(Prepared {
        path: cstr(&path.to_string_lossy())?,
        args: args.iter().map(|a| cstr(a)).collect::<Result<_>>()?,
        env: env.iter().map(|e| cstr(e)).collect::<Result<_>>()?,
        filter,
        no_new_privs,
    })
}

/// Makes the next execve enter AppArmor profile `profile`: `exec <profile>` written to
/// the process's own exec attribute (the AppArmor-specific file of kernels that stack
/// LSMs, else the shared one). The kernel refuses a profile it has not loaded.
fn apparmor_on_exec(profile: &str) -> Result<()> {
    let value = format!("exec {profile}");
    let mut last = None;
    for path in ["/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"] {
        match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(mut f) => {
                return f.write_all(value.as_bytes()).map_err(|e| {
                    Error(format!("apply AppArmor profile {profile:?}: write {path}: {e}"))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => last = Some((path, e)),
            Err(e) => {
                return Err(Error(format!("apply AppArmor profile {profile:?}: open {path}: {e}")))
            }
        }
    }
    let (path, e) = last.expect("two paths tried");
    Err(Error(format!(
        "apply AppArmor profile {profile:?}: {path}: {e} (is AppArmor enabled on this host?)"
    )))
}
