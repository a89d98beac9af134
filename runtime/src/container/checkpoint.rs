//! CheckpointContainer: a running container's processes dumped with CRIU and left running,
//! packed with its OCI spec and its writable layer into the archive the kubelet asked for
//! (its checkpoint API: `POST /checkpoint/{namespace}/{pod}/{container}`, forensic
//! container checkpointing).
//!
//! The archive is laid out as CRI-O and containerd lay theirs out, so that the tools made
//! for those (checkpointctl) read berth's too:
//!
//! | entry | what |
//! | --- | --- |
//! | `checkpoint/` | CRIU's image files |
//! | `dump.log` | CRIU's log of the dump |
//! | `spec.dump` | the container's OCI runtime spec |
//! | `config.dump` | id, name, image and times of the container (JSON) |
//! | `rootfs-diff.tar` | what the container changed in its root filesystem |
//! | `deleted.files` | what it deleted there (JSON list of paths) |
//!
//! CRIU runs as a process of berthd's (like a CNI plugin), on the container's init process
//! (its host pid) with the spec's view of the container: bind mounts and a joined network
//! or pid namespace (the pod's) are external to it, the container's cgroup is frozen for
//! the dump. Both the native executor and OCI runtime handlers lay containers out so.

use super::record::ContainerRecord;
use crate::error::{internal, RuntimeError};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, RuntimeError>;

/// Used when the request's timeout is 0 ("the CRI default").
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The CRIU key berth gives the pod's network namespace, as runc and crun do, so that a
/// restore by any of them finds it.
const EXT_NETNS: &str = "extRootNetNS";
const EXT_PIDNS: &str = "extRootPidNS";

/// Where the archive goes: the request's `location`, checked before anything is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive(PathBuf);

impl Archive {
    pub fn parse(location: &str) -> Result<Archive> {
        let bad =
            |why: &str| RuntimeError::InvalidArgument(format!("location {location:?}: {why}"));
        if location.is_empty() {
            return Err(bad("empty: the path of the checkpoint archive to write is needed"));
        }
        let path = Path::new(location);
        if !path.is_absolute() {
            return Err(bad("not an absolute path"));
        }
        if path.file_name().is_none() || location.ends_with('/') {
            return Err(bad("names a directory, not the archive file"));
        }
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !parent.is_dir() {
            return Err(bad("its directory does not exist"));
        }
        if path.is_dir() {
            return Err(bad("is a directory"));
        }
        Ok(Archive(path.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// The `criu` binary on berthd's PATH (`search` is a PATH value).
pub fn find_criu(search: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    std::env::split_paths(search?)
        .map(|d| d.join("criu"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// What CRIU must be told about the container to dump it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DumpView {
    /// Mount points inside the container whose source lies outside its root (binds).
    pub external_mounts: Vec<String>,
    /// The inode of a network namespace the container joined (the pod's).
    pub netns_inode: Option<u64>,
    /// The inode of a pid namespace the container joined (a pod sharing its pids).
    pub pidns_inode: Option<u64>,
}

impl DumpView {
    /// From the container's spec; `inode` stats a namespace path; `v1_hierarchies` names
    /// the host's cgroup v1 hierarchies (their mount's last component; none on a v2 host).
    pub fn of(
        spec: &Spec,
        inode: impl Fn(&Path) -> std::io::Result<u64>,
        v1_hierarchies: &[String],
    ) -> Result<DumpView> {
        let mut view = DumpView::default();
        let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone());
        let own_cgroupns = namespaces
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Cgroup && n.path().is_none());
        for m in spec.mounts().iter().flatten() {
            let opts = m.options().as_deref().unwrap_or_default();
            let bind = m.typ().as_deref() == Some("bind")
                || opts.iter().any(|o| o == "bind" || o == "rbind");
            let dest = m.destination().display().to_string();
            if bind {
                view.external_mounts.push(dest);
            } else if matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")) {
                // Without a cgroup namespace of its own the executor binds the container's
                // cgroup directories from the host (executor::mounts::mount_cgroups), which
                // receive the host's mount events: outside the dump, like any bind.
                if v1_hierarchies.is_empty() {
                    if !own_cgroupns {
                        view.external_mounts.push(dest);
                    }
                } else {
                    let base = dest.trim_end_matches('/');
                    view.external_mounts
                        .extend(v1_hierarchies.iter().map(|h| format!("{base}/{h}")));
                }
            }
        }
        for ns in namespaces.iter().flatten() {
            let Some(path) = ns.path() else { continue };
            let ino =
                || inode(path).map_err(|e| internal(format!("namespace {}: {e}", path.display())));
            match ns.typ() {
                LinuxNamespaceType::Network => view.netns_inode = Some(ino()?),
                LinuxNamespaceType::Pid => view.pidns_inode = Some(ino()?),
                _ => {}
            }
        }
        Ok(view)
    }

    /// `criu dump`'s arguments for the process tree of `pid` (a host pid) rooted at
    /// `rootfs`, into `images`, the cgroup `freeze` frozen while it runs.
    pub fn dump_args(
        &self,
        pid: i32,
        rootfs: &Path,
        images: &Path,
        freeze: Option<&Path>,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "dump".into(),
            "--tree".into(),
            pid.to_string().into(),
            "--images-dir".into(),
            images.into(),
            "--log-file".into(),
            "dump.log".into(),
            "-v4".into(),
            // The kubelet's checkpoints are forensic: the container keeps running.
            "--leave-running".into(),
            "--root".into(),
            rootfs.into(),
            "--manage-cgroups=soft".into(),
            // What a workload commonly holds: TCP connections, sockets to the host (a
            // log daemon), locked files.
            "--tcp-established".into(),
            "--ext-unix-sk".into(),
            "--file-locks".into(),
            // The container's mounts that receive the host's mount events (slaves of host
            // mounts, like the native executor's /sys/fs/cgroup) are dumped with their
            // master left outside.
            "--enable-external-masters".into(),
        ];
        if let Some(cg) = freeze {
            a.push("--freeze-cgroup".into());
            a.push(cg.into());
        }
        for m in &self.external_mounts {
            a.push("--external".into());
            a.push(format!("mnt[{m}]:{m}").into());
        }
        if let Some(ino) = self.netns_inode {
            a.push("--external".into());
            a.push(format!("net[{ino}]:{EXT_NETNS}").into());
        }
        if let Some(ino) = self.pidns_inode {
            a.push("--external".into());
            a.push(format!("pid[{ino}]:{EXT_PIDNS}").into());
        }
        a
    }
}

/// The cgroup CRIU freezes for the dump: the one `pid` is in, from its
/// `/proc/<pid>/cgroup` text (the v2 entry, or v1's freezer).
pub fn freezer_cgroup(proc_cgroup: &str, cgroup_root: &Path) -> Option<PathBuf> {
    let mut v1 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() && !rel.is_empty() {
            return Some(cgroup_root.join(rel));
        }
        if controllers.split(',').any(|c| c == "freezer") {
            v1 = Some(cgroup_root.join("freezer").join(rel));
        }
    }
    v1
}

/// Dumps the running container `rec` (its init process `pid`, its writable layer
/// `upper`) into `archive`, working in a fresh directory in `work_root` that is gone
/// afterwards. CRIU gets `timeout` before it is killed.
pub fn checkpoint(
    rec: &ContainerRecord,
    pid: i32,
    upper: &Path,
    work_root: &Path,
    archive: &Archive,
    timeout: Duration,
) -> Result<()> {
    let criu = find_criu(std::env::var_os("PATH").as_deref()).ok_or_else(|| {
        RuntimeError::FailedPrecondition(
            "checkpointing needs CRIU, and berthd finds no `criu` on its PATH".into(),
        )
    })?;
    let spec_bytes = std::fs::read(rec.bundle.join("config.json")).map_err(internal)?;
    let spec: Spec = serde_json::from_slice(&spec_bytes).map_err(internal)?;
    let v1: Vec<String> = crate::cgroupfs::hierarchies()
        .map_err(internal)?
        .into_iter()
        .filter(|h| !h.v2)
        .filter_map(|h| Some(h.mount.file_name()?.to_string_lossy().into_owned()))
        .collect();
    let view = DumpView::of(&spec, |p| std::fs::metadata(p).map(|m| m.ino()), &v1)?;
    let freeze = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|s| freezer_cgroup(&s, Path::new("/sys/fs/cgroup")));

    let work = tempfile::Builder::new()
        .prefix(&format!(".berth-checkpoint-work.{}.", rec.id))
        .tempdir_in(work_root)
        .map_err(internal)?;
    let images = work.path().join("checkpoint");
    std::fs::create_dir(&images).map_err(internal)?;
    let args = view.dump_args(pid, &rec.rootfs, &images, freeze.as_deref());
    let checkpointed_at = crate::clock::now_ns();
    run_criu(&criu, &args, &images, timeout)?;

    let config = config_dump(rec, checkpointed_at);
    let diff = work.path().join("rootfs-diff.tar");
    let deleted = layer_diff(upper, &diff)?;
    write_archive(archive, &images, &spec_bytes, &config, &diff, &deleted)
}

/// Runs CRIU, killing it at `timeout`; its log ends up in `images/dump.log`.
fn run_criu(criu: &Path, args: &[OsString], images: &Path, timeout: Duration) -> Result<()> {
    let mut child = Command::new(criu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| internal(format!("running {}: {e}", criu.display())))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(internal)? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RuntimeError::DeadlineExceeded(format!(
                "CRIU did not finish the dump within {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let log = std::fs::read_to_string(images.join("dump.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().filter(|l| l.contains("Error")).take(5).collect();
    Err(internal(format!(
        "CRIU failed to dump the container ({status}): {} {}",
        tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        stderr.trim()
    )))
}

/// `config.dump`: the container as checkpoint tools name it.
fn config_dump(rec: &ContainerRecord, checkpointed_at: i64) -> Vec<u8> {
    let rfc3339 = crate::shim::log::format_timestamp;
    let v = serde_json::json!({
        "id": rec.id,
        "name": rec.name,
        "rootfsImage": rec.image,
        "rootfsImageRef": rec.image_id.to_string(),
        "rootfsImageName": rec.image,
        "runtime": "berth",
        "createdTime": rfc3339(rec.created_at),
        "checkpointedTime": rfc3339(checkpointed_at),
    });
    serde_json::to_vec_pretty(&v).unwrap_or_default()
}

/// Writes what the container changed in its root filesystem (its overlay upper dir) to
/// the tar `out`, and returns what it deleted (overlay whiteouts, which are left out of
/// the tar).
fn layer_diff(upper: &Path, out: &Path) -> Result<Vec<String>> {
    let file = std::fs::File::create(out).map_err(internal)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(false);
    let mut deleted = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = upper.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| internal(format!("{}: {e}", dir.display())))?
            .collect::<std::io::Result<_>>()
            .map_err(internal)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = rel.join(e.file_name());
            let meta = e.metadata().map_err(internal)?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                deleted.push(name.display().to_string());
                continue;
            }
            tar.append_path_with_name(e.path(), &name)
                .map_err(|err| internal(format!("packing {}: {err}", name.display())))?;
            if ft.is_dir() {
                stack.push(name);
            }
        }
    }
    tar.into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .map_err(internal)?;
    Ok(deleted)
}

/// The archive, written beside its final name and renamed there once complete, so that
/// `location` never holds half an archive.
fn write_archive(
    archive: &Archive,
    images: &Path,
    spec: &[u8],
    config: &[u8],
    diff: &Path,
    deleted: &[String],
) -> Result<()> {
    let dir = archive.path().parent().unwrap_or(Path::new("/"));
    let tmp = tempfile::Builder::new()
        .prefix(".berth-checkpoint.")
        .tempfile_in(dir)
        .map_err(|e| internal(format!("{}: {e}", dir.display())))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp.as_file()));
    tar.follow_symlinks(false);
    let written = (|| -> std::io::Result<()> {
        // CRIU's log sits with its images; checkpoint tools look for it at the top.
        let log = images.join("dump.log");
        if log.exists() {
            tar.append_path_with_name(&log, "dump.log")?;
        }
        for e in std::fs::read_dir(images)? {
            let e = e?;
            if e.file_name() != "dump.log" {
                tar.append_path_with_name(e.path(), Path::new("checkpoint").join(e.file_name()))?;
            }
        }
        append_bytes(&mut tar, "spec.dump", spec)?;
        append_bytes(&mut tar, "config.dump", config)?;
        let deleted = serde_json::to_vec(deleted).unwrap_or_default();
        append_bytes(&mut tar, "deleted.files", &deleted)?;
        tar.append_path_with_name(diff, "rootfs-diff.tar")?;
        tar.into_inner()?.flush()?;
        tmp.as_file().sync_all()
    })();
    written.map_err(|e| internal(format!("writing {}: {e}", archive.path().display())))?;
    tmp.persist(archive.path())
        .map_err(|e| internal(format!("{}: {}", archive.path().display(), e.error)))?;
    Ok(())
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(crate::clock::now_ns() as u64 / 1_000_000_000);
    h.set_cksum();
    tar.append_data(&mut h, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_must_be_an_absolute_file_path_in_an_existing_directory() {
        let d = tempfile::tempdir().unwrap();
        let ok = d.path().join("c.tar");
        assert_eq!(Archive::parse(ok.to_str().unwrap()).unwrap().path(), ok);
        for (loc, why) in [
            ("", "empty"),
            ("c.tar", "absolute"),
            ("/nonexistent-dir-of-berth/c.tar", "does not exist"),
            ("/tmp/", "directory"),
        ] {
            let e = Archive::parse(loc).unwrap_err().to_string();
            assert!(e.starts_with(&format!("location {loc:?}")), "{e}");
            assert!(e.contains(why), "{loc}: {e}");
        }
        let e = Archive::parse(d.path().to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
    }

    #[test]
    fn criu_is_looked_up_on_the_path() {
        let d = tempfile::tempdir().unwrap();
        let none = std::ffi::OsString::from(d.path());
        assert_eq!(find_criu(Some(&none)), None);
        let criu = d.path().join("criu");
        std::fs::write(&criu, "#!/bin/sh\n").unwrap();
        // Not executable: not a binary to run.
        assert_eq!(find_criu(Some(&none)), None);
        std::fs::set_permissions(&criu, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = std::env::join_paths(["/nonexistent", d.path().to_str().unwrap()]).unwrap();
        assert_eq!(find_criu(Some(&path)), Some(criu));
        assert_eq!(find_criu(None), None);
    }

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn binds_and_joined_namespaces_are_external_to_the_dump() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/run/p/hosts",
                 "options": ["rbind", "ro"]},
                {"destination": "/data", "source": "/var/data", "options": ["rbind"]},
                {"destination": "/dev/shm", "type": "none", "source": "/run/p/shm",
                 "options": ["bind"]},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"}
            ],
            "linux": {"namespaces": [
                {"type": "network", "path": "/run/p/net"},
                {"type": "ipc", "path": "/run/p/ipc"},
                {"type": "pid"},
                {"type": "mount"}
            ]}
        }));
        let stat = |p: &Path| {
            assert_eq!(p, Path::new("/run/p/net"), "only the joined netns is stat'ed");
            Ok(4026532001)
        };
        let view = DumpView::of(&s, stat, &[]).unwrap();
        // On v2 without a cgroup namespace of its own, /sys/fs/cgroup is a host bind too.
        assert_eq!(view.external_mounts, ["/etc/hosts", "/data", "/dev/shm", "/sys/fs/cgroup"]);
        let v1 = DumpView::of(&s, stat, &["memory".into(), "cpu,cpuacct".into()]).unwrap();
        assert_eq!(
            &v1.external_mounts[3..],
            ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu,cpuacct"]
        );
        assert_eq!(view.netns_inode, Some(4026532001));
        assert_eq!(view.pidns_inode, None);

        let args = view.dump_args(
            4242,
            Path::new("/b/rootfs"),
            Path::new("/w/checkpoint"),
            Some(Path::new("/sys/fs/cgroup/berth/p/c")),
        );
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = args.join(" ");
        for want in [
            "dump --tree 4242 --images-dir /w/checkpoint",
            "--leave-running",
            "--root /b/rootfs",
            "--freeze-cgroup /sys/fs/cgroup/berth/p/c",
            "--external mnt[/etc/hosts]:/etc/hosts",
            "--external mnt[/data]:/data",
            "--external net[4026532001]:extRootNetNS",
        ] {
            assert!(joined.contains(want), "{want:?} not in {joined}");
        }
        assert!(!joined.contains("pid["), "{joined}");
    }

    #[test]
    fn a_cgroup_mount_of_the_containers_own_namespace_is_its_own() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [{"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup"}],
            "linux": {"namespaces": [{"type": "cgroup"}]}
        }));
        let view = DumpView::of(&s, |_| Ok(1), &[]).unwrap();
        assert!(view.external_mounts.is_empty(), "{view:?}");
    }

    #[test]
    fn a_namespace_that_cannot_be_stated_fails_the_view() {
        let s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"namespaces": [{"type": "pid", "path": "/run/p/pid"}]}
        }));
        let e = DumpView::of(&s, |_| Err(std::io::Error::other("gone")), &[]).unwrap_err();
        assert!(e.to_string().contains("/run/p/pid"), "{e}");
    }

    #[test]
    fn the_frozen_cgroup_is_the_processes_own() {
        let root = Path::new("/sys/fs/cgroup");
        let v2 = "0::/berth.slice/berth-p.slice/berth-c.scope\n";
        assert_eq!(
            freezer_cgroup(v2, root),
            Some(root.join("berth.slice/berth-p.slice/berth-c.scope"))
        );
        let v1 = "12:pids:/berth/p/c\n7:freezer:/berth/p/c\n0::/\n";
        assert_eq!(freezer_cgroup(v1, root), Some(root.join("freezer/berth/p/c")));
        assert_eq!(freezer_cgroup("", root), None);
        assert_eq!(freezer_cgroup("garbage", root), None);
    }

    #[test]
    fn the_layer_diff_keeps_changes_and_lists_deletions() {
        let d = tempfile::tempdir().unwrap();
        let upper = d.path().join("upper");
        std::fs::create_dir_all(upper.join("etc/app")).unwrap();
        std::fs::write(upper.join("etc/app/conf"), "changed").unwrap();
        std::os::unix::fs::symlink("/nowhere", upper.join("link")).unwrap();
        let root = nix::unistd::geteuid().is_root();
        if root {
            // An overlay whiteout: a 0/0 character device.
            let c = std::ffi::CString::new(upper.join("etc/gone").to_str().unwrap()).unwrap();
            // SAFETY: mknod on a valid C string.
            assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) }, 0);
        }
        let out = d.path().join("diff.tar");
        let deleted = layer_diff(&upper, &out).unwrap();
        let mut names = Vec::new();
        let mut ar = tar::Archive::new(std::fs::File::open(&out).unwrap());
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
            if e.path().unwrap() == Path::new("link") {
                assert_eq!(e.link_name().unwrap().unwrap(), Path::new("/nowhere"));
            }
        }
        names.sort();
        assert_eq!(names, ["etc", "etc/app", "etc/app/conf", "link"]);
        if root {
            assert_eq!(deleted, ["etc/gone"]);
        }
    }
}
