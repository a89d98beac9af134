//! A [`Syscalls`] for unit tests: it makes no call, writes each down as a line of text
//! (`mount /src -> /dst bind MS_BIND|MS_REC`), and fails the calls a test asks it to.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::statvfs::FsFlags;

use super::Syscalls;
use crate::cgroupfs::Hierarchy;

#[derive(Default)]
pub struct Recorder {
    calls: RefCell<Vec<String>>,
    /// Calls whose line starts with the text fail with the error.
    failing: Vec<(String, Errno)>,
    /// What `mount_flags` answers for every path.
    flags: FsFlags,
    hierarchies: Vec<Hierarchy>,
}

impl Recorder {
    /// A host with these cgroup hierarchies.
    pub fn on(hierarchies: Vec<Hierarchy>) -> Self {
        Self { hierarchies, ..Default::default() }
    }

    /// Every mount has these flags (as statvfs shows them).
    pub fn with_mount_flags(mut self, flags: FsFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Fails every call whose line starts with `prefix`.
    pub fn failing(mut self, prefix: &str, e: Errno) -> Self {
        self.failing.push((prefix.to_string(), e));
        self
    }

    /// The lines so far, with `root` shown as `<root>`.
    pub fn calls(&self, root: &Path) -> Vec<String> {
        let root = root.display().to_string();
        self.calls.borrow().iter().map(|c| c.replace(&root, "<root>")).collect()
    }

    fn record(&self, line: String) -> Result<(), Errno> {
        let failed = self.failing.iter().find(|(p, _)| line.starts_with(p.as_str()));
        self.calls.borrow_mut().push(line);
        match failed {
            Some((_, e)) => Err(*e),
            None => Ok(()),
        }
    }
}

/// `MS_BIND | MS_REC` for `MsFlags(MS_BIND | MS_REC)`.
fn names(flags: impl std::fmt::Debug) -> String {
    let s = format!("{flags:?}");
    match (s.find('('), s.strip_suffix(')')) {
        (Some(open), Some(inner)) => inner[open + 1..].to_string(),
        _ => s,
    }
}

fn show(p: Option<&Path>) -> String {
    p.map_or("-".into(), |p| p.display().to_string())
}

impl Syscalls for Recorder {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        let mut line = format!(
            "mount {} -> {} {} {}",
            show(src),
            dst.display(),
            fstype.unwrap_or("-"),
            names(flags)
        );
        if let Some(d) = data {
            line.push_str(&format!(" {d}"));
        }
        self.record(line)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        self.record(format!("umount {} {}", target.display(), names(flags)))
    }

    fn mount_flags(&self, _path: &Path) -> Option<FsFlags> {
        Some(self.flags)
    }

    fn read_only_recursively(&self, path: &Path) -> io::Result<()> {
        Ok(self.record(format!("read-only recursively {}", path.display()))?)
    }

    fn restrict_recursively(&self, path: &Path, read_only: bool) -> io::Result<()> {
        let ro = if read_only { " read-only" } else { "" };
        Ok(self.record(format!("restrict recursively {}{ro}", path.display()))?)
    }

    fn attach(&self, _tree: OwnedFd, target: &Path) -> io::Result<()> {
        Ok(self.record(format!("attach {}", target.display()))?)
    }

    fn mknod(
        &self,
        path: &Path,
        kind: libc::mode_t,
        major: u64,
        minor: u64,
        mode: u32,
    ) -> io::Result<()> {
        let kind = if kind == libc::S_IFBLK { 'b' } else { 'c' };
        Ok(self.record(format!("mknod {} {kind} {major}:{minor} {mode:o}", path.display()))?)
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        Ok(self.record(format!("chown {} {uid:?}:{gid:?}", path.display()))?)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(format!("unshare {}", names(flags)))
    }

    fn pivot_root(&self, rootfs: &Path) -> nix::Result<()> {
        self.record(format!("pivot_root {}", rootfs.display()))
    }

    fn root_after_pivot(&self, rootfs: &Path) -> PathBuf {
        rootfs.to_path_buf()
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(format!("chdir {}", path.display()))
    }

    fn fchdir(&self, _dir: &std::fs::File) -> nix::Result<()> {
        self.record("fchdir old root".into())
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(format!("sethostname {name}"))
    }

    fn write_sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        Ok(self.record(format!("sysctl {key}={value}"))?)
    }

    fn cgroup_hierarchies(&self) -> io::Result<Vec<Hierarchy>> {
        Ok(self.hierarchies.clone())
    }
}
