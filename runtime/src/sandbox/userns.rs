//! A pod's user namespace (`hostUsers: false`): the mappings the kubelet asks for, their
//! validation, and the namespace itself, pinned like the others.
//!
//! The pod's net, IPC and UTS namespaces must be *owned* by its user namespace (a
//! container root may then configure them, and mount `sysfs` and `mqueue` for them), so
//! all four are made by one `unshare` in a child process: a thread cannot make a user
//! namespace, berthd has many threads. The child does nothing but unshare, report and
//! wait; berthd writes its `uid_map`/`gid_map` (as root of the parent namespace, so
//! `setgroups` stays allowed, as Kubernetes' supplemental groups need), bind-mounts its
//! four `/proc/<pid>/ns/*` onto the pins and lets it exit.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

/// One id mapping: `length` ids from `container_id` inside are `host_id`.. outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMap {
    /// The line for `/proc/<pid>/{uid,gid}_map`.
    pub fn proc_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }

    /// The host id of container id `id`, if mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.container_id).filter(|o| *o < self.length)?;
        self.host_id.checked_add(off)
    }
}

/// The CRI `UserNamespace` option as asked: the mode and the mappings as given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsernsSpec {
    pub mode: super::namespaces::NsMode,
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
}

/// A valid pod user namespace: one uid and one gid mapping, container id 0 mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Userns {
    pub uid: IdMap,
    pub gid: IdMap,
}

impl Userns {
    /// The host uid and gid that are root inside.
    pub fn host_root(&self) -> (u32, u32) {
        (self.uid.host_id, self.gid.host_id)
    }
}

const FIELD: &str = "config.linux.security_context.namespace_options.userns_options";

/// Checks the option: NODE (or none) means the host's user namespace (`None`); POD needs
/// exactly one uid and one gid mapping that map container id 0, without wrapping; the
/// kubelet never asks for CONTAINER or TARGET.
pub fn validate(spec: Option<&UsernsSpec>) -> Result<Option<Userns>, String> {
    use super::namespaces::NsMode;
    let Some(spec) = spec else { return Ok(None) };
    match spec.mode {
        NsMode::Node => {
            if !spec.uids.is_empty() || !spec.gids.is_empty() {
                return Err(format!("{FIELD}: mappings are only allowed with mode POD"));
            }
            Ok(None)
        }
        NsMode::Pod => {
            let one = |name: &str, maps: &[IdMap]| -> Result<IdMap, String> {
                let [m] = maps else {
                    return Err(format!(
                        "{FIELD}.{name}: exactly one mapping is supported, got {}",
                        maps.len()
                    ));
                };
                if m.container_id != 0 {
                    return Err(format!(
                        "{FIELD}.{name}[0].container_id: must be 0 (container root must be \
                         mapped), got {}",
                        m.container_id
                    ));
                }
                if m.length == 0 {
                    return Err(format!("{FIELD}.{name}[0].length: must not be 0"));
                }
                if m.host_id.checked_add(m.length).is_none() {
                    return Err(format!(
                        "{FIELD}.{name}[0]: host ids {}+{} overflow",
                        m.host_id, m.length
                    ));
                }
                if m.host_id == 0 {
                    return Err(format!(
                        "{FIELD}.{name}[0].host_id: 0 would make the host's root the pod's root"
                    ));
                }
                Ok(*m)
            };
            Ok(Some(Userns { uid: one("uids", &spec.uids)?, gid: one("gids", &spec.gids)? }))
        }
        mode => Err(format!("{FIELD}.mode: {mode:?} is not supported (POD or NODE)")),
    }
}

/// Where the pod's namespaces are pinned.
#[derive(Debug, Clone)]
pub struct Pins {
    pub user: PathBuf,
    pub net: PathBuf,
    pub ipc: PathBuf,
    pub uts: PathBuf,
}

impl Pins {
    fn all(&self) -> [(&'static str, &Path); 4] {
        [("user", &self.user), ("net", &self.net), ("ipc", &self.ipc), ("uts", &self.uts)]
    }
}

/// Makes the user namespace with `userns`'s mappings and, owned by it, new net, IPC and
/// UTS namespaces, and pins all four. On failure nothing stays pinned. Blocking.
pub fn create(userns: &Userns, pins: &Pins) -> Result<(), String> {
    for (_, p) in pins.all() {
        berth_network::netns::create_pin_file(p)
            .map_err(|e| format!("create {}: {e}", p.display()))?;
    }
    let result = create_pinned(userns, pins);
    if result.is_err() {
        remove(pins);
    }
    result
}

/// Removes the four pins; idempotent.
pub fn remove(pins: &Pins) {
    for (_, p) in pins.all() {
        let _ = berth_network::netns::remove(p);
    }
}

fn pipe() -> Result<(File, File), String> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    Ok((File::from(r), File::from(w)))
}

fn create_pinned(userns: &Userns, pins: &Pins) -> Result<(), String> {
    let (mut ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // SAFETY: berthd is multi-threaded; the child only makes raw system calls (unshare,
    // write, read, _exit), which are async-signal-safe, and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        use std::os::fd::AsRawFd;
        // SAFETY: raw system calls on descriptors this child owns.
        unsafe {
            // Its copy of the parent's ends, or its own read would never see EOF.
            libc::close(go_w.as_raw_fd());
            libc::close(ready_r.as_raw_fd());
            let ok: u8 = if libc::unshare(flags) == 0 { 1 } else { 0 };
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(go_r);
    let reap = |go: File| {
        drop(go);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    };
    let mut b = [0u8; 1];
    if ready_r.read(&mut b).unwrap_or(0) != 1 || b[0] != 1 {
        reap(go_w);
        return Err("unshare user, net, ipc and uts namespaces: refused by the kernel \
                    (user namespaces disabled? see user.max_user_namespaces)"
            .into());
    }
    let result = (|| {
        for (file, map) in [("uid_map", userns.uid), ("gid_map", userns.gid)] {
            let path = format!("/proc/{pid}/{file}");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(map.proc_line().as_bytes()))
                .map_err(|e| format!("write {file} {:?}: {e}", map.proc_line().trim()))?;
        }
        for (kind, pin) in pins.all() {
            let src = format!("/proc/{pid}/ns/{kind}");
            mount(Some(src.as_str()), pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| format!("pin {kind} namespace at {}: {e}", pin.display()))?;
        }
        Ok(())
    })();
    reap(go_w);
    result
}

/// An open descriptor of the pinned user namespace at `pin` (for idmapped mounts).
pub fn open(pin: &Path) -> Result<OwnedFd, String> {
    let f = File::open(pin).map_err(|e| format!("open user namespace {}: {e}", pin.display()))?;
    Ok(OwnedFd::from(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::namespaces::NsMode;

    fn pod(uids: Vec<IdMap>, gids: Vec<IdMap>) -> UsernsSpec {
        UsernsSpec { mode: NsMode::Pod, uids, gids }
    }

    const M: IdMap = IdMap { container_id: 0, host_id: 1000, length: 100_000 };

    #[test]
    fn pod_mode_takes_one_mapping_of_root() {
        let v = validate(Some(&pod(vec![M], vec![M]))).unwrap().unwrap();
        assert_eq!(v.host_root(), (1000, 1000));
        assert_eq!(v.uid.proc_line(), "0 1000 100000\n");
        assert_eq!(v.uid.to_host(5), Some(1005));
        assert_eq!(v.uid.to_host(100_000), None);
    }

    #[test]
    fn node_mode_or_none_is_the_host() {
        assert_eq!(validate(None).unwrap(), None);
        let node = UsernsSpec { mode: NsMode::Node, ..Default::default() };
        assert_eq!(validate(Some(&node)).unwrap(), None);
    }

    #[test]
    fn bad_options_name_the_field() {
        let two = vec![M, IdMap { host_id: 2000, ..M }];
        let cases = [
            (pod(two.clone(), two), "userns_options.uids: exactly one"),
            (pod(vec![IdMap { container_id: 1, ..M }], vec![M]), "uids[0].container_id"),
            (pod(vec![M], vec![IdMap { length: 0, ..M }]), "gids[0].length"),
            (pod(vec![IdMap { host_id: u32::MAX, ..M }], vec![M]), "overflow"),
            (pod(vec![IdMap { host_id: 0, ..M }], vec![M]), "uids[0].host_id"),
            (pod(vec![], vec![M]), "uids: exactly one mapping is supported, got 0"),
            (UsernsSpec { mode: NsMode::Container, ..Default::default() }, "mode: Container"),
            (UsernsSpec { mode: NsMode::Target, ..Default::default() }, "mode: Target"),
            (UsernsSpec { mode: NsMode::Node, uids: vec![M], gids: vec![] }, "only allowed"),
        ];
        for (spec, want) in cases {
            let err = validate(Some(&spec)).unwrap_err();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
            assert!(err.starts_with(FIELD), "{err:?}");
        }
    }
}
