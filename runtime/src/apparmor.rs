//! AppArmor: which profile a container runs under, and berth's own default profile.
//!
//! The request comes as a [`crate::security_profile::ProfileRequest`]: cri-server decodes the
//! CRI's two ways of asking (the `apparmor` field and the deprecated `apparmor_profile`
//! string) into it, and neither set means `runtime/default`, as the CRI defines it.
//!
//! On a host with AppArmor enabled, `runtime/default` is [`DEFAULT_PROFILE`] (loaded by
//! berthd with `apparmor_parser` when the kernel does not list it), except for
//! privileged containers, which run unconfined; `localhost/<name>` is the profile of
//! that name, refused when the kernel has not loaded it; `unconfined` is no profile. On
//! a host without AppArmor nothing can confine: `localhost/...` is refused (the pod asked
//! for a confinement it would not get), the others run unconfined, as with containerd.
//!
//! The profile travels in the OCI spec's `process.apparmorProfile`: runc applies it, and
//! the native executor writes it to `/proc/self/attr/apparmor/exec` before execve.

use crate::error::RuntimeError;
use crate::security_profile::ProfileRequest as Request;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The name of berth's default profile (`runtime/default`).
pub const DEFAULT_PROFILE: &str = "berth-default";

/// The field name in errors.
const FIELD: &str = "config.linux.security_context.apparmor";

/// The host's AppArmor: whether it confines, and where it lists its loaded profiles.
#[derive(Debug, Clone)]
pub struct AppArmor {
    enabled: bool,
    /// securityfs' list of loaded profiles (`name (mode)` lines).
    profiles: PathBuf,
}

impl AppArmor {
    /// Enabled when the module says so and securityfs shows its directory.
    pub fn detect() -> Self {
        let module = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.trim() == "Y");
        let fs = Path::new("/sys/kernel/security/apparmor");
        Self { enabled: module && fs.is_dir(), profiles: fs.join("profiles") }
    }

    /// A host without AppArmor.
    pub fn disabled() -> Self {
        Self { enabled: false, profiles: PathBuf::new() }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the kernel has loaded a profile of that name.
    pub fn is_loaded(&self, name: &str) -> std::io::Result<bool> {
        Ok(lists(&std::fs::read_to_string(&self.profiles)?, name))
    }

    /// Loads [`DEFAULT_PROFILE`] unless the kernel already has it. No-op without AppArmor.
    pub fn ensure_default(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let loaded = self.is_loaded(DEFAULT_PROFILE);
        if loaded.as_ref().is_ok_and(|l| *l) {
            return Ok(());
        }
        let abi = Path::new("/etc/apparmor.d/abi/3.0").exists();
        load(&default_profile(abi)).map_err(|e| {
            format!("cannot load the AppArmor profile {DEFAULT_PROFILE} with apparmor_parser: {e}")
        })
    }

    /// The profile a container runs under (`None`: unconfined), or why it cannot run.
    /// Loads the default profile when the request needs it and the kernel lost it.
    pub fn profile_for(
        &self,
        req: &Request,
        privileged: bool,
    ) -> Result<Option<String>, RuntimeError> {
        let profile = select(req, privileged, self.enabled, |n| self.is_loaded(n))?;
        if profile.as_deref() == Some(DEFAULT_PROFILE) && *req == Request::RuntimeDefault {
            self.ensure_default().map_err(RuntimeError::FailedPrecondition)?;
        }
        Ok(profile)
    }
}

/// The selection rules, apart from the host: `enabled` is whether AppArmor is on,
/// `is_loaded` asks the kernel about a profile.
pub fn select(
    req: &Request,
    privileged: bool,
    enabled: bool,
    is_loaded: impl Fn(&str) -> std::io::Result<bool>,
) -> Result<Option<String>, RuntimeError> {
    match req {
        Request::Unconfined => Ok(None),
        Request::RuntimeDefault if !enabled || privileged => Ok(None),
        Request::RuntimeDefault => Ok(Some(DEFAULT_PROFILE.to_string())),
        Request::Localhost(name) if !enabled => Err(RuntimeError::InvalidArgument(format!(
            "{FIELD}: profile localhost/{name} cannot be applied: AppArmor is not enabled on \
             this host"
        ))),
        Request::Localhost(name) => match is_loaded(name) {
            Ok(true) => Ok(Some(name.clone())),
            Ok(false) => Err(RuntimeError::InvalidArgument(format!(
                "{FIELD}: AppArmor profile {name:?} (localhost/{name}) is not loaded on this \
                 host"
            ))),
            Err(e) => Err(RuntimeError::Internal(format!(
                "{FIELD}: cannot list the loaded AppArmor profiles: {e}"
            ))),
        },
    }
}

/// Whether securityfs' profile list (`name (mode)` per line) names `name`.
fn lists(profiles: &str, name: &str) -> bool {
    profiles.lines().any(|l| l.rsplit_once(" (").map_or(l, |(n, _)| n) == name)
}

/// Runs `apparmor_parser -Kr` (replace, no cache) on the profile text.
fn load(text: &str) -> Result<(), String> {
    let mut last = String::new();
    for parser in ["apparmor_parser", "/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"] {
        let child = Command::new(parser)
            .arg("-Kr")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last = format!("{parser}: not found (install the apparmor package)");
                continue;
            }
            Err(e) => return Err(format!("{parser}: {e}")),
        };
        let mut stdin = child.stdin.take().expect("piped");
        let written = stdin.write_all(text.as_bytes());
        drop(stdin);
        let out = child.wait_with_output().map_err(|e| format!("{parser}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{parser} {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        return written.map_err(|e| format!("{parser}: writing the profile: {e}"));
    }
    Err(last)
}

/// berth's default profile: everything a container ordinarily does (files, network,
/// capabilities the bounding set leaves it, signals and tracing among its own
/// processes), minus what would reach past the container: mounting, writing kernel
/// settings through /proc and /sys outside its namespaced corners, and the kernel's
/// memory, firmware and LSM interfaces. Self-contained (no includes), so that it loads
/// on hosts without the policy abstractions; `abi` pins the 3.0 feature ABI where the
/// host's parser ships it.
pub fn default_profile(abi: bool) -> String {
    let mut text = String::new();
    if abi {
        text.push_str("abi <abi/3.0>,\n\n");
    }
    text.push_str(&BODY.replace("@NAME@", DEFAULT_PROFILE));
    text
}

const BODY: &str = r#"# berth's runtime/default AppArmor profile, loaded by berthd.
profile @NAME@ flags=(attach_disconnected,mediate_deleted) {
  # What a container may do at all: the other layers (namespaces, capabilities,
  # seccomp, the device cgroup) narrow these.
  file,
  network,
  capability,
  umount,

  # Signals: from the host's unconfined processes (the shim, berthd, the kubelet's
  # probes through them) and from an OCI runtime; within the container freely.
  signal (receive) peer=unconfined,
  signal (receive) peer=runc,
  signal (receive) peer=crun,
  signal (send, receive) peer=@NAME@,

  # Tracing only within the container.
  ptrace (trace, tracedby, read, readby) peer=@NAME@,

  # No new mounts, bind mounts or remounts, even with CAP_SYS_ADMIN.
  deny mount,
  deny pivot_root,

  # /proc: files at its top (sysrq-trigger, kcore, ...), and the directories there
  # that are neither a process nor sys, are not written.
  deny /proc/* w,
  deny /proc/{[^0-9s]*,s[^y]*,sy[^s]*,sys?*}/** w,
  deny /proc/sysrq-trigger rwklx,
  deny /proc/kcore rwklx,
  # /proc/sys: only the IPC namespace's shared memory settings (kernel/shm*) may be
  # written; the rest is the host's kernel.
  deny /proc/sys/{[^k]**,k[^e]**,kernel/[^s]**,kernel/s[^h]**,kernel/sh[^m]**} w,

  # /sys: nothing written but the container's cgroup files; firmware, the LSMs'
  # interfaces, debugfs and power capping not even read.
  deny /sys/{[^f]*,f[^s]*,fs/[^c]*,fs/c[^g]*,fs/cg[^r]*}/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
  deny /sys/kernel/debug/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(names: &'static [&'static str]) -> impl Fn(&str) -> std::io::Result<bool> {
        move |n| Ok(names.contains(&n))
    }

    #[test]
    fn selection_on_a_host_with_apparmor() {
        let on = |req: Request, privileged| select(&req, privileged, true, loaded(&["mine"]));
        assert_eq!(on(Request::RuntimeDefault, false).unwrap().as_deref(), Some(DEFAULT_PROFILE));
        assert_eq!(on(Request::RuntimeDefault, true).unwrap(), None, "privileged: unconfined");
        assert_eq!(on(Request::Unconfined, false).unwrap(), None);
        assert_eq!(on(Request::Localhost("mine".into()), false).unwrap().as_deref(), Some("mine"));
        assert_eq!(
            on(Request::Localhost("mine".into()), true).unwrap().as_deref(),
            Some("mine"),
            "a profile asked for by name applies to a privileged container too"
        );
        match on(Request::Localhost("absent".into()), false) {
            Err(RuntimeError::InvalidArgument(m)) => {
                assert!(m.contains("config.linux.security_context.apparmor"), "{m}");
                assert!(m.contains("\"absent\"") && m.contains("not loaded"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn selection_on_a_host_without_apparmor() {
        let never = |_: &str| -> std::io::Result<bool> { panic!("no AppArmor to ask") };
        assert_eq!(select(&Request::RuntimeDefault, false, false, never).unwrap(), None);
        assert_eq!(select(&Request::Unconfined, false, false, never).unwrap(), None);
        match select(&Request::Localhost("p".into()), false, false, never) {
            Err(RuntimeError::InvalidArgument(m)) => {
                assert!(m.contains("config.linux.security_context.apparmor"), "{m}");
                assert!(m.contains("localhost/p") && m.contains("not enabled"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_kernel_profile_list_is_read_by_name() {
        let list = "berth-default (enforce)\nnvidia_modprobe (complain)\n\
                    /usr/bin/man (enforce)\nwith space (x) (enforce)\n";
        assert!(lists(list, "berth-default"));
        assert!(lists(list, "/usr/bin/man"));
        assert!(lists(list, "with space (x)"));
        assert!(!lists(list, "berth"));
        assert!(!lists(list, "enforce"));
        assert!(!lists("", "berth-default"));
    }

    #[test]
    fn the_default_profile_is_named_and_balanced() {
        let text = default_profile(true);
        assert!(text.starts_with("abi <abi/3.0>,"));
        assert!(!default_profile(false).contains("abi <"));
        assert!(text.contains("profile berth-default flags="));
        assert!(!text.contains("@NAME@"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert!(text.contains("deny mount,"));
    }
}
