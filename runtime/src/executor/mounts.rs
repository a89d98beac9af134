//! The container's filesystem: spec mounts under the rootfs, /dev, pivot_root, masked and
//! read-only paths. Runs in the container's new mount namespace.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use std::os::fd::OwnedFd;

use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use super::cgroups;
use super::error::{Ctx, Error, Result};
use super::syscalls::Syscalls;

/// Mount flags, propagation flags and filesystem data parsed from OCI mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub bind: bool,
    pub recursive: bool,
    /// `rro`: read-only including every mount below (mount_setattr, Linux 5.12+).
    pub recursive_readonly: bool,
    /// `idmap` / `ridmap`: a bind through the mount's uid/gid mappings.
    pub idmap: bool,
    pub data: Vec<String>,
}

pub fn parse_options(opts: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        bind: false,
        recursive: false,
        recursive_readonly: false,
        idmap: false,
        data: Vec::new(),
    };
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            "rro" => {
                o.recursive_readonly = true;
                continue;
            }
            "idmap" | "ridmap" => {
                o.idmap = true;
                continue;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let base = match opt.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                let rec = if opt.starts_with('r') { MsFlags::MS_REC } else { MsFlags::empty() };
                o.propagation = base | rec;
                continue;
            }
            _ => {
                o.data.push(opt.clone());
                continue;
            }
        };
        o.flags = (o.flags | set) & !clear;
    }
    o
}

/// Resolves `path` (absolute, as seen in the container) inside `root`, following
/// symlinks as if `root` were `/`, so nothing can point a mount outside the rootfs.
pub fn resolve_in_root(root: &Path, path: &Path) -> Result<PathBuf> {
    let mut todo: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut done: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&done);
        candidate.push(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(Error(format!("too many symlinks resolving {}", path.display())));
                }
                let target = fs::read_link(&candidate)
                    .ctx(|| format!("readlink {}", candidate.display()))?;
                if target.is_absolute() {
                    done.clear();
                }
                for comp in target.components().rev() {
                    match comp {
                        Component::Normal(n) => todo.push(n.to_os_string()),
                        Component::ParentDir => todo.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => done.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&done);
    Ok(out)
}

fn mnt(
    sys: &dyn Syscalls,
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let flags = if flags.contains(MsFlags::MS_BIND | MsFlags::MS_REMOUNT) {
        flags | kept_on_remount(sys, dst)
    } else {
        flags
    };
    sys.mount(src, dst, fstype, flags, data).map_err(|e| {
        let what = fstype.map(str::to_string).unwrap_or_else(|| "bind".into());
        Error(format!(
            "mount {} ({what}) on {}: {e}",
            src.map(|s| s.display().to_string()).unwrap_or_default(),
            dst.display()
        ))
    })
}

/// The flags a bind remount of `dst` must keep: nosuid, nodev, noexec and the atime
/// mode of the mount. In a user namespace they are locked (the kernel refuses a remount
/// that would drop them, EPERM); everywhere, dropping them would loosen what the host
/// mount promised.
fn kept_on_remount(sys: &dyn Syscalls, dst: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Some(f) = sys.mount_flags(dst) else { return MsFlags::empty() };
    let mut out = MsFlags::empty();
    for (have, keep) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(have) {
            out |= keep;
        }
    }
    out
}

fn ensure_target(dst: &Path, file: bool) -> Result<()> {
    if dst.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
    }
    if file {
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(dst).map(drop)
    } else {
        fs::create_dir(dst)
    }
    .ctx(|| format!("create mount point {}", dst.display()))
}

/// Sets up everything under `rootfs` before pivot_root.
/// Idmapped clones of the bind sources of mounts with `idmap`, by index in the spec's
/// mounts. Made in the host's user namespace before the container process leaves it
/// (making an idmapped mount takes CAP_SYS_ADMIN where the filesystem was mounted), from
/// the user namespace at `userns`; the mount's own mappings must be that namespace's,
/// which the spec builder checks.
pub fn idmapped_sources(spec: &Spec, userns: Option<&Path>) -> Result<Vec<Option<OwnedFd>>> {
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let opts = parse_options(m.options().as_deref().unwrap_or_default());
        if !opts.idmap {
            out.push(None);
            continue;
        }
        let userns = userns.ok_or_else(|| {
            Error(format!(
                "idmapped mount {} needs the container to have a user namespace",
                m.destination().display()
            ))
        })?;
        let src = m.source().as_deref().ok_or_else(|| {
            Error(format!("bind mount {} has no source", m.destination().display()))
        })?;
        let ns = fs::File::open(userns).ctx(|| format!("open {}", userns.display()))?;
        let tree = crate::mount_api::idmapped_clone(src, &ns)
            .ctx(|| format!("idmapped mount of {}", src.display()))?;
        out.push(Some(tree));
    }
    Ok(out)
}

pub fn prepare_rootfs(
    sys: &dyn Syscalls,
    spec: &Spec,
    rootfs: &Path,
    mut idmapped: Vec<Option<OwnedFd>>,
) -> Result<()> {
    let linux = spec.linux().as_ref();
    let prop = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        Some("shared") | Some("rshared") => MsFlags::MS_SHARED,
        Some("private") | Some("rprivate") => MsFlags::MS_PRIVATE,
        Some("unbindable") | Some("runbindable") => MsFlags::MS_UNBINDABLE,
        _ => MsFlags::MS_SLAVE,
    };
    mnt(sys, None, Path::new("/"), None, prop | MsFlags::MS_REC, None)?;
    if prop == MsFlags::MS_SHARED {
        // With a shared tree, every mount made under the rootfs (proc, dev, the rootfs
        // bind itself) would also appear on the host. Only the volumes that ask for it
        // may propagate: they are bound from shared sources and stay in their peer groups.
        let parent = crate::mount_table::mount_point_of(rootfs)
            .ok_or_else(|| Error(format!("no mount holds {}", rootfs.display())))?;
        mnt(sys, None, &parent, None, MsFlags::MS_PRIVATE, None)?;
    }
    // Our own bind of the rootfs: a mount point pivot_root can use, and the base for a
    // read-only root later.
    mnt(sys, Some(rootfs), rootfs, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    let mut dev_is_tmpfs = false;
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let tree = idmapped.get_mut(i).and_then(Option::take);
        mount_one(sys, spec, rootfs, m, tree)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        create_devices(sys, &rootfs.join("dev"))?;
    }
    for d in linux.and_then(|l| l.devices().as_ref()).into_iter().flatten() {
        let dst = resolve_in_root(rootfs, d.path())?;
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
        }
        let kind = match d.typ() {
            oci_spec::runtime::LinuxDeviceType::B => libc::S_IFBLK,
            oci_spec::runtime::LinuxDeviceType::P => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        let mode = d.file_mode().unwrap_or(0o666);
        make_node(sys, &dst, kind, d.major() as u64, d.minor() as u64, mode)?;
        let _ = sys.chown(&dst, d.uid(), d.gid());
    }
    Ok(())
}

fn mount_one(
    sys: &dyn Syscalls,
    spec: &Spec,
    rootfs: &Path,
    m: &Mount,
    idmapped: Option<OwnedFd>,
) -> Result<()> {
    let dst = resolve_in_root(rootfs, m.destination())?;
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or(if opts.bind { "bind" } else { "none" });
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroups(sys, spec, &dst, &opts);
    }
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if opts.bind || typ == "bind" {
        let src = m.source().as_deref().ok_or_else(|| {
            Error(format!("bind mount {} has no source", m.destination().display()))
        })?;
        let is_file = fs::metadata(src).ctx(|| format!("bind source {}", src.display()))?.is_file();
        ensure_target(&dst, is_file)?;
        let rec = if opts.recursive { MsFlags::MS_REC } else { MsFlags::empty() };
        match idmapped {
            Some(tree) => sys
                .attach(tree, &dst)
                .ctx(|| format!("attach idmapped mount at {}", dst.display()))?,
            None => mnt(sys, Some(src), &dst, None, MsFlags::MS_BIND | rec, None)?,
        }
        if !opts.flags.is_empty() {
            mnt(sys, None, &dst, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | opts.flags, None)?;
        }
        if opts.recursive_readonly {
            sys.read_only_recursively(&dst)
                .map_err(|e| Error(format!("read-only recursively {}: {e}", dst.display())))?;
        }
    } else {
        ensure_target(&dst, false)?;
        let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let r = sys.mount(Some(&src), &dst, Some(typ), opts.flags, data);
        match r {
            Ok(()) => {}
            // sysfs can be refused (e.g. in a network namespace we do not own): bind the
            // host's instead, read-only as asked.
            Err(nix::errno::Errno::EPERM) if typ == "sysfs" => {
                mnt(
                    sys,
                    Some(Path::new("/sys")),
                    &dst,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )?;
                mnt(
                    sys,
                    None,
                    &dst,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | opts.flags,
                    None,
                )?;
            }
            Err(e) => {
                return Err(Error(format!("mount {} on {}: {e}", typ, m.destination().display())))
            }
        }
    }
    if !opts.propagation.is_empty() {
        mnt(sys, None, &dst, None, opts.propagation, None)?;
    }
    Ok(())
}

/// A `cgroup` mount. On a cgroup v2 host: the v2 filesystem itself, whose root is the
/// container's cgroup when it has a cgroup namespace of its own (made after it was placed
/// in its cgroup), else a bind of its cgroup directory. On a v1 or hybrid host: a tmpfs
/// with, for each hierarchy, a bind of the container's own cgroup directory (so the
/// container sees its cgroup as the root, v1-style).
fn mount_cgroups(sys: &dyn Syscalls, spec: &Spec, dst: &Path, opts: &MountOptions) -> Result<()> {
    ensure_target(dst, false)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let rel = match spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref()) {
        Some(p) => cgroups::check_path(p)?,
        None => PathBuf::new(),
    };
    let hierarchies = sys.cgroup_hierarchies().ctx(|| "read mountinfo".into())?;
    if let Some(h) = crate::cgroupfs::unified_only(&hierarchies) {
        let ro = opts.flags & MsFlags::MS_RDONLY;
        let own_ns =
            spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()).is_some_and(|nss| {
                nss.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none())
            });
        if own_ns {
            return mnt(sys, Some(Path::new("cgroup2")), dst, Some("cgroup2"), flags | ro, None);
        }
        mnt(sys, Some(&h.mount.join(&rel)), dst, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        return mnt(
            sys,
            None,
            dst,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | ro,
            None,
        );
    }
    mnt(sys, Some(Path::new("tmpfs")), dst, Some("tmpfs"), flags, Some("mode=755"))?;
    let mut binds = Vec::new();
    for h in hierarchies {
        let name = h.mount.file_name().map(PathBuf::from).unwrap_or_default();
        if name.as_os_str().is_empty() {
            continue;
        }
        let src = h.mount.join(&rel);
        if !src.is_dir() {
            continue;
        }
        // The tmpfs is fresh: its mount points are made without a look first.
        let target = dst.join(&name);
        match fs::create_dir(&target) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(Error(format!("create mount point {}: {e}", target.display())))
            }
            _ => {}
        }
        mnt(sys, Some(&src), &target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        // cpu,cpuacct is also reachable as cpu and cpuacct.
        if h.controllers.len() > 1 {
            for c in &h.controllers {
                let link = dst.join(c.trim_start_matches("name="));
                if link != target && !link.exists() {
                    let _ = symlink(&name, link);
                }
            }
        }
        binds.push(target);
    }
    // The tmpfs and every bind under it made nosuid, nodev, noexec (and read-only if
    // asked) in one call; a kernel without mount_setattr (before 5.12) remounts each.
    let read_only = opts.flags.contains(MsFlags::MS_RDONLY);
    match sys.restrict_recursively(dst, read_only) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
        r => return r.map_err(|e| Error(format!("restrict {}: {e}", dst.display()))),
    }
    let ro = opts.flags & MsFlags::MS_RDONLY;
    for target in &binds {
        mnt(sys, None, target, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | ro, None)?;
    }
    if read_only {
        mnt(sys, None, dst, None, MsFlags::MS_REMOUNT | flags | ro, Some("mode=755"))?;
    }
    Ok(())
}

fn make_node(
    sys: &dyn Syscalls,
    path: &Path,
    kind: libc::mode_t,
    major: u64,
    minor: u64,
    mode: u32,
) -> Result<()> {
    let _ = fs::remove_file(path);
    if let Err(e) = sys.mknod(path, kind, major, minor, mode) {
        if e.raw_os_error() == Some(libc::EPERM) && kind == libc::S_IFCHR {
            // Without CAP_MKNOD: bind the host's node.
            ensure_target(path, true)?;
            let host = Path::new("/dev").join(path.file_name().unwrap_or_default());
            return mnt(sys, Some(&host), path, None, MsFlags::MS_BIND, None);
        }
        return Err(Error(format!("mknod {}: {e}", path.display())));
    }
    Ok(())
}

/// The standard device nodes and links of a fresh /dev tmpfs.
pub fn create_devices(sys: &dyn Syscalls, dev: &Path) -> Result<()> {
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        make_node(sys, &dev.join(name), libc::S_IFCHR, major, minor, 0o666)?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        let p = dev.join(link);
        if p.symlink_metadata().is_err() {
            symlink(target, &p).ctx(|| format!("symlink {}", p.display()))?;
        }
    }
    Ok(())
}

/// pivot_root into `rootfs` and detach the old root.
pub fn pivot(sys: &dyn Syscalls, rootfs: &Path) -> Result<()> {
    let old_root = fs::File::open("/").ctx(|| "open the old root".into())?;
    sys.chdir(rootfs).map_err(|e| Error(format!("chdir {}: {e}", rootfs.display())))?;
    sys.pivot_root(rootfs).map_err(|e| Error(format!("pivot_root: {e}")))?;
    // The old root is now stacked over the new one; "." still names the new root, so
    // step into the old one through its fd. Make it a slave before detaching it, or the
    // unmounts of its (possibly shared) submounts would propagate to the host.
    sys.fchdir(&old_root).map_err(|e| Error(format!("fchdir old root: {e}")))?;
    mnt(sys, None, Path::new("."), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
    sys.umount(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(|e| Error(format!("unmount old root: {e}")))?;
    drop(old_root);
    sys.chdir(Path::new("/")).map_err(|e| Error(format!("chdir /: {e}")))
}

/// After pivot_root: masked paths, read-only paths, read-only root. `root` is where the
/// container's `/` is seen from here: `/` itself after pivot_root.
pub fn finish(sys: &dyn Syscalls, spec: &Spec, root: &Path) -> Result<()> {
    let linux = spec.linux().as_ref();
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    for p in linux.and_then(|l| l.masked_paths().as_ref()).into_iter().flatten() {
        let path = &at(p);
        match fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error(format!("mask {p}: {e}"))),
            Ok(m) if m.is_dir() => mnt(
                sys,
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )?,
            Ok(_) => mnt(sys, Some(Path::new("/dev/null")), path, None, MsFlags::MS_BIND, None)?,
        }
    }
    for p in linux.and_then(|l| l.readonly_paths().as_ref()).into_iter().flatten() {
        let path = &at(p);
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        mnt(sys, Some(path), path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        let ro = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mnt(sys, None, path, None, ro, None)?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        mnt(
            sys,
            None,
            root,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
