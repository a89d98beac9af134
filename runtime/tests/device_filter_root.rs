//! Root test of the cgroup v2 device filter against the kernel: a program attached to a
//! v2 cgroup decides what a process in it may open. Runs on any host with a v2 hierarchy
//! (a hybrid host's `/sys/fs/cgroup/unified` too: the kernel asks the v2 programs of a
//! process's cgroup whatever the v1 devices controller says).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_runtime::cgroupfs::hierarchies;
use berth_runtime::executor::device_filter;
use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};

struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// Runs `script` with busybox's sh in cgroup `cg`; returns its exit status and stderr.
fn run_in(cg: &Path, script: &str) -> (bool, String) {
    let procs = cg.join("cgroup.procs");
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["sh", "-c", script]);
    // SAFETY: the closure only writes a file, which is safe between fork and exec here
    // (the test process's other threads hold no lock this needs).
    unsafe {
        cmd.pre_exec(move || fs::write(&procs, "0"));
    }
    let out = cmd.output().expect("run busybox");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_device_program_refuses_what_its_rules_do_not_allow() {
    assert!(nix::unistd::geteuid().is_root(), "attaching device programs needs root");
    assert!(Path::new("/bin/busybox").exists(), "install Debian's busybox-static");
    let v2 = hierarchies()
        .unwrap()
        .into_iter()
        .find(|h| h.v2)
        .expect("no cgroup v2 hierarchy mounted: berth needs one (pure v2 or hybrid)");
    let cg = Cgroup(v2.mount.join(format!("berth-devfilter-{}", std::process::id())));
    fs::create_dir(&cg.0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An unbound loop device: opening it works whenever the cgroup lets it.
    let node = dir.path().join("loop");
    let script = format!("mknod {0} b 7 0 2>/dev/null || true; head -c 1 {0}", node.display());

    let (_, defaults) =
        berth_runtime::container::devices::devices(&Default::default(), false).unwrap();
    device_filter::apply(&cg.0, &defaults).unwrap();
    let (ok, err) = run_in(&cg.0, &script);
    assert!(!ok && err.contains("not permitted"), "a block device opened: {err}");
    assert!(run_in(&cg.0, "head -c 1 /dev/zero >/dev/null").0, "/dev/zero refused");

    // New rules replace the old program: the device given is readable, and one
    // program stays attached.
    let mut given = defaults.clone();
    given.push(
        LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::B)
            .major(7)
            .minor(0)
            .access("rw")
            .build()
            .unwrap(),
    );
    device_filter::apply(&cg.0, &given).unwrap();
    assert_eq!(device_filter::attached_count(&cg.0).unwrap(), 1);
    let (ok, err) = run_in(&cg.0, &script);
    assert!(ok, "the device given was refused: {err}");
    let (ok, _) = run_in(&cg.0, &format!("mknod {0}.8 b 7 8 && head -c 1 {0}.8", node.display()));
    assert!(!ok, "a block device not given opened");
}
