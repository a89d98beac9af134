//! Root test of forking straight into a cgroup (`clone3` with `CLONE_INTO_CGROUP`), which
//! the executor uses on cgroup v2 hosts. Needs root and a cgroup v2 hierarchy: the
//! unified one of a hybrid host (as on the project's machines) or a v2-only host's.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use berth_runtime::executor::clone_into::fork_into;
use nix::unistd::ForkResult;

/// A cgroup of this test's own in the v2 hierarchy, removed on drop.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_child_forked_into_a_v2_cgroup_is_born_there() {
    assert!(nix::unistd::geteuid().is_root(), "this test makes cgroups: run it as root");
    let v2 = berth_runtime::cgroupfs::hierarchies()
        .unwrap()
        .into_iter()
        .find(|h| h.v2)
        .expect("this test needs a cgroup v2 hierarchy (hybrid or v2-only host)");
    let name = format!("berth-clone-into-{}", std::process::id());
    let cgroup = TestCgroup(v2.mount.join(&name));
    std::fs::create_dir(&cgroup.0).unwrap();
    let dir = File::open(&cgroup.0).unwrap();
    let (r, w) = nix::unistd::pipe().unwrap();

    // SAFETY: the test harness has other threads, so the child only makes raw syscalls
    // (open, read, write, _exit) before it exits.
    match unsafe { fork_into(dir.as_fd()) }.expect("the kernel refused CLONE_INTO_CGROUP") {
        ForkResult::Child => unsafe {
            let mut buf = [0u8; 4096];
            let fd = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::write(std::os::fd::AsRawFd::as_raw_fd(&w), buf.as_ptr().cast(), n.max(0) as _);
            libc::_exit(0)
        },
        ForkResult::Parent { child } => {
            drop(w);
            let mut text = String::new();
            std::io::Read::read_to_string(&mut File::from(r), &mut text).unwrap();
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            let v2_line = text.lines().find(|l| l.starts_with("0::")).unwrap_or_default();
            assert_eq!(v2_line, format!("0::/{name}"), "the child's cgroups: {text}");
            let left = std::fs::read_to_string(cgroup.0.join("cgroup.procs")).unwrap();
            assert!(left.trim().is_empty(), "a process left in the test cgroup: {left}");
        }
    }
}
