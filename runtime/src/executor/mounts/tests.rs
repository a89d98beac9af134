use super::*;

#[test]
fn options_parse_into_flags_propagation_and_data() {
    let o = parse_options(&["rbind".into(), "ro".into(), "rslave".into(), "nosuid".into()]);
    assert!(o.bind && o.recursive);
    assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
    assert_eq!(o.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
    let o = parse_options(&["nosuid".into(), "mode=755".into(), "size=65536k".into(), "rw".into()]);
    assert_eq!(o.flags, MsFlags::MS_NOSUID);
    assert_eq!(o.data, ["mode=755", "size=65536k"]);
    assert!(!o.bind);
}

#[test]
fn symlinks_cannot_escape_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("a/b")).unwrap();
    symlink("/etc", root.join("abs")).unwrap();
    symlink("../../../../..", root.join("a/up")).unwrap();
    assert_eq!(resolve_in_root(root, Path::new("/abs/x")).unwrap(), root.join("etc/x"));
    assert_eq!(resolve_in_root(root, Path::new("/a/up/etc")).unwrap(), root.join("etc"));
    assert_eq!(resolve_in_root(root, Path::new("/../../x")).unwrap(), root.join("x"));
    assert_eq!(resolve_in_root(root, Path::new("/a/b/c")).unwrap(), root.join("a/b/c"));
    symlink("loop", root.join("loop")).unwrap();
    assert!(resolve_in_root(root, Path::new("/loop")).is_err());
}

use crate::cgroupfs::Hierarchy;
use crate::executor::syscalls::recorder::Recorder;
use crate::oci_defaults::{default_spec, PodNamespaces};
use nix::errno::Errno;
use nix::sys::statvfs::FsFlags;
use oci_spec::runtime::MountBuilder;

fn bind(dest: &str, src: &Path, opts: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(src)
        .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .unwrap()
}

/// A rootfs with `/etc`, a directory and a file on the host to bind, and a spec with the
/// standard mounts plus `extra`.
struct Fixture {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    host_dir: PathBuf,
    host_file: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    let host_dir = dir.path().join("volume");
    fs::create_dir(&host_dir).unwrap();
    let host_file = dir.path().join("resolv.conf");
    fs::write(&host_file, "nameserver 10.0.0.1\n").unwrap();
    Fixture { _dir: dir, rootfs, host_dir, host_file }
}

fn spec(f: &Fixture, extra: Vec<Mount>) -> Spec {
    let mut spec = default_spec(&f.rootfs, &["/bin/sh"], &PodNamespaces::default(), None);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.extend(extra);
    spec.set_mounts(Some(mounts));
    spec
}

fn v1_hierarchies(f: &Fixture) -> Vec<Hierarchy> {
    let memory = f.host_dir.join("memory");
    fs::create_dir_all(&memory).unwrap();
    vec![Hierarchy { mount: memory, controllers: vec!["memory".into()], v2: false }]
}

fn position(calls: &[String], line: &str) -> usize {
    calls.iter().position(|c| c == line).unwrap_or_else(|| panic!("no {line:?} in {calls:#?}"))
}

#[test]
fn the_rootfs_is_a_slave_bound_onto_itself_before_any_mount_under_it() {
    let f = fixture();
    let sys = Recorder::on(v1_hierarchies(&f));
    prepare_rootfs(&sys, &spec(&f, vec![]), &f.rootfs, vec![]).unwrap();
    let calls = sys.calls(&f.rootfs);
    assert_eq!(calls[0], "mount - -> / - MS_REC | MS_SLAVE", "{calls:#?}");
    assert_eq!(calls[1], "mount <root> -> <root> - MS_BIND | MS_REC");
    // The standard mounts, in the spec's order, each inside the rootfs.
    let proc_ = position(&calls, "mount proc -> <root>/proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC");
    let dev = position(
        &calls,
        "mount tmpfs -> <root>/dev tmpfs MS_NOSUID | MS_STRICTATIME mode=755,size=65536k",
    );
    let sys_ = position(
        &calls,
        "mount sysfs -> <root>/sys sysfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC",
    );
    assert!(proc_ < dev && dev < sys_, "{calls:#?}");
    // A v1 host's cgroups: a tmpfs with a read-only bind of the container's cgroup.
    let cg = position(
        &calls,
        "mount tmpfs -> <root>/sys/fs/cgroup tmpfs MS_NOSUID | MS_NODEV | MS_NOEXEC mode=755",
    );
    assert!(
        calls[cg + 1].starts_with("mount ")
            && calls[cg + 1].ends_with("-> <root>/sys/fs/cgroup/memory - MS_BIND | MS_REC")
    );
    // Then the tmpfs and its binds are made read-only (nosuid, nodev, noexec) in one call,
    // not remounted one by one.
    let restrict = position(&calls, "restrict recursively <root>/sys/fs/cgroup read-only");
    assert_eq!(restrict, cg + 2, "{calls:#?}");
    assert!(!calls.iter().any(|c| c.contains("sys/fs/cgroup") && c.contains("MS_REMOUNT")));
    // A fresh /dev gets the standard nodes, and the mount points were made in the rootfs.
    for node in ["null c 1:3 666", "zero c 1:5 666", "urandom c 1:9 666", "tty c 5:0 666"] {
        position(&calls, &format!("mknod <root>/dev/{node}"));
    }
    assert!(f.rootfs.join("proc").is_dir() && f.rootfs.join("dev").is_dir());
    assert_eq!(fs::read_link(f.rootfs.join("dev/ptmx")).unwrap(), Path::new("pts/ptmx"));
}

#[test]
fn a_read_only_bind_is_remounted_keeping_the_host_mounts_locked_flags() {
    let f = fixture();
    let sys = Recorder::on(v1_hierarchies(&f))
        .with_mount_flags(FsFlags::ST_NOSUID | FsFlags::ST_NODEV | FsFlags::ST_RELATIME);
    let volume = bind("/data", &f.host_dir, &["rbind", "rslave", "ro"]);
    let file = bind("/etc/resolv.conf", &f.host_file, &["rbind", "rprivate", "rw"]);
    prepare_rootfs(&sys, &spec(&f, vec![volume, file]), &f.rootfs, vec![]).unwrap();
    let calls = sys.calls(&f.rootfs);
    let host = f.host_dir.display();
    let i = position(&calls, &format!("mount {host} -> <root>/data - MS_BIND | MS_REC"));
    assert_eq!(
        calls[i + 1..i + 3],
        [
            "mount - -> <root>/data - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REMOUNT | MS_BIND | MS_RELATIME",
            "mount - -> <root>/data - MS_REC | MS_SLAVE",
        ]
    );
    // A file is bound onto a file, which the set-up made; `rw` asks for no remount.
    let j = position(
        &calls,
        &format!("mount {} -> <root>/etc/resolv.conf - MS_BIND | MS_REC", f.host_file.display()),
    );
    assert_eq!(calls[j + 1], "mount - -> <root>/etc/resolv.conf - MS_REC | MS_PRIVATE");
    assert!(f.rootfs.join("etc/resolv.conf").is_file());
}

#[test]
fn a_destination_through_a_symlink_stays_inside_the_rootfs() {
    let f = fixture();
    symlink("/../../../../etc", f.rootfs.join("escape")).unwrap();
    let sys = Recorder::on(v1_hierarchies(&f));
    let volume = bind("/escape/x", &f.host_dir, &["rbind", "rw"]);
    prepare_rootfs(&sys, &spec(&f, vec![volume]), &f.rootfs, vec![]).unwrap();
    let calls = sys.calls(&f.rootfs);
    position(&calls, &format!("mount {} -> <root>/etc/x - MS_BIND | MS_REC", f.host_dir.display()));
    assert!(f.rootfs.join("etc/x").is_dir());
}

#[test]
fn recursive_read_only_and_a_shared_root() {
    let f = fixture();
    let sys = Recorder::on(v1_hierarchies(&f));
    let volume = bind("/data", &f.host_dir, &["rbind", "rprivate", "ro", "rro"]);
    let mut spec = spec(&f, vec![volume]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_rootfs_propagation(Some("rshared".into()));
    spec.set_linux(Some(linux));
    prepare_rootfs(&sys, &spec, &f.rootfs, vec![]).unwrap();
    let calls = sys.calls(&f.rootfs);
    assert_eq!(calls[0], "mount - -> / - MS_REC | MS_SHARED");
    // The mount holding the rootfs goes private, so that proc, dev and the rest do not
    // show up on the host.
    assert!(
        calls[1].ends_with(" - MS_PRIVATE") && calls[1].starts_with("mount - -> /"),
        "{calls:#?}"
    );
    position(&calls, "read-only recursively <root>/data");
}

#[test]
fn a_v2_host_mounts_cgroup2_with_a_namespace_of_its_own_else_binds_the_cgroup() {
    let f = fixture();
    let unified = f.host_dir.join("unified");
    fs::create_dir(&unified).unwrap();
    let v2 = vec![Hierarchy { mount: unified.clone(), controllers: vec![], v2: true }];
    let with_ns = |own: bool| {
        let mut spec = spec(&f, vec![]);
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some("/kubepods/pod1/c1".into()));
        let mut nss = linux.namespaces().clone().unwrap_or_default();
        if own {
            nss.push(
                oci_spec::runtime::LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Cgroup)
                    .build()
                    .unwrap(),
            );
        }
        linux.set_namespaces(Some(nss));
        spec.set_linux(Some(linux));
        let sys = Recorder::on(v2.clone());
        prepare_rootfs(&sys, &spec, &f.rootfs, vec![]).unwrap();
        sys.calls(&f.rootfs)
    };
    let own = with_ns(true);
    position(&own, "mount cgroup2 -> <root>/sys/fs/cgroup cgroup2 MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC");
    let shared = with_ns(false);
    let i = position(
        &shared,
        &format!(
            "mount {}/kubepods/pod1/c1 -> <root>/sys/fs/cgroup - MS_BIND | MS_REC",
            unified.display()
        ),
    );
    assert_eq!(
        shared[i + 1],
        "mount - -> <root>/sys/fs/cgroup - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REMOUNT | MS_BIND"
    );
}

#[test]
fn refusals_fall_back_where_the_kernel_allows_it_and_name_the_mount_where_not() {
    let f = fixture();
    // No CAP_MKNOD (a user namespace): the host's node is bound instead.
    let sys = Recorder::on(v1_hierarchies(&f))
        .failing("mknod", Errno::EPERM)
        .failing("mount sysfs", Errno::EPERM);
    prepare_rootfs(&sys, &spec(&f, vec![]), &f.rootfs, vec![]).unwrap();
    let calls = sys.calls(&f.rootfs);
    position(&calls, "mount /dev/null -> <root>/dev/null - MS_BIND");
    // sysfs refused (a network namespace berth does not own): the host's, read-only.
    let i = position(&calls, "mount /sys -> <root>/sys - MS_BIND | MS_REC");
    assert!(calls[i + 1].starts_with("mount - -> <root>/sys - MS_RDONLY"), "{calls:#?}");

    let sys = Recorder::on(v1_hierarchies(&f)).failing("mount proc", Errno::EBUSY);
    let err = prepare_rootfs(&sys, &spec(&f, vec![]), &f.rootfs, vec![]).unwrap_err();
    assert!(err.0.contains("proc") && err.0.contains("EBUSY"), "{err}");
}

#[test]
fn after_the_pivot_paths_are_masked_bound_read_only_and_the_root_made_read_only() {
    let f = fixture();
    fs::create_dir_all(f.rootfs.join("proc/acpi")).unwrap();
    fs::write(f.rootfs.join("proc/kcore"), "").unwrap();
    fs::create_dir_all(f.rootfs.join("proc/sys")).unwrap();
    let mut spec = spec(&f, vec![]);
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(true));
    spec.set_root(Some(root));
    let sys = Recorder::default();
    finish(&sys, &spec, &f.rootfs).unwrap();
    let calls = sys.calls(&f.rootfs);
    position(
        &calls,
        "mount tmpfs -> <root>/proc/acpi tmpfs MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC size=0",
    );
    position(&calls, "mount /dev/null -> <root>/proc/kcore - MS_BIND");
    let i = position(&calls, "mount <root>/proc/sys -> <root>/proc/sys - MS_BIND | MS_REC");
    assert_eq!(
        calls[i + 1],
        "mount - -> <root>/proc/sys - MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_REMOUNT | MS_BIND"
    );
    assert_eq!(calls.last().unwrap(), "mount - -> <root> - MS_RDONLY | MS_REMOUNT | MS_BIND");
    // Paths the rootfs does not have are left alone.
    assert!(!calls.iter().any(|c| c.contains("/proc/scsi")), "{calls:#?}");
}
