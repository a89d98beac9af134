use super::*;

#[test]
fn oom_score_adj_is_clamped_to_our_own() {
    assert_eq!(clamp_oom_score_adj(-999, -500), -500);
    assert_eq!(clamp_oom_score_adj(100, -500), 100);
    assert_eq!(clamp_oom_score_adj(5000, 0), 1000);
}

#[test]
fn refuses_to_fork_when_threaded() {
    // The test harness runs tests on threads, so this process has several.
    let spec = Spec::default();
    let _t = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(200)));
    let err = create(&spec, Path::new("/nonexistent"), dummy_stdio()).unwrap_err();
    assert!(err.0.contains("threads"), "{err}");
}

fn dummy_stdio() -> Stdio {
    let f = || OwnedFd::from(File::open("/dev/null").unwrap());
    Stdio { stdin: f(), stdout: f(), stderr: f(), tty: false }
}

mod set_up {
    use super::super::syscalls::recorder::Recorder;
    use super::*;
    use crate::oci_defaults::{default_spec, PodNamespaces};
    use std::collections::HashMap;

    fn spec(rootfs: &Path, sysctls: &[(&str, &str)]) -> Spec {
        let mut spec = default_spec(rootfs, &["/bin/sh"], &PodNamespaces::default(), None);
        spec.set_hostname(Some("web-0".into()));
        let mut linux = spec.linux().clone().unwrap();
        let sysctls: HashMap<String, String> =
            sysctls.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        linux.set_sysctl(Some(sysctls));
        // No cgroup mount: which hierarchies a host has is the mounts tests' subject.
        spec.set_mounts(Some(
            crate::oci_defaults::default_mounts()
                .into_iter()
                .filter(|m| m.typ().as_deref() != Some("cgroup"))
                .collect(),
        ));
        spec.set_linux(Some(linux));
        spec
    }

    #[test]
    fn the_order_of_a_containers_set_up() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("proc/sys")).unwrap();
        let sys = Recorder::default();
        let new = CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
        let spec = spec(&rootfs, &[("net.ipv4.ip_unprivileged_port_start", "0")]);
        set_up_namespaces(&sys, &spec, &rootfs, new, vec![]).unwrap();
        let calls = sys.calls(&rootfs);
        let at = |line: &str| {
            calls.iter().position(|c| c == line).unwrap_or_else(|| panic!("{line:?}: {calls:#?}"))
        };
        assert_eq!(calls[0], "unshare CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC");
        let proc_ = at("mount proc -> <root>/proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC");
        let pivot = at("pivot_root <root>");
        assert_eq!(
            calls[pivot - 1..pivot + 5],
            [
                "chdir <root>",
                "pivot_root <root>",
                "fchdir old root",
                "mount - -> . - MS_REC | MS_SLAVE",
                "umount . MNT_DETACH",
                "chdir /",
            ]
        );
        let sysctl = at("sysctl net.ipv4.ip_unprivileged_port_start=0");
        let read_only = at("mount <root>/proc/sys -> <root>/proc/sys - MS_BIND | MS_REC");
        let hostname = at("sethostname web-0");
        // Mounts under the rootfs before the pivot; sysctls before /proc/sys goes
        // read-only; the host name last.
        assert!(proc_ < pivot && pivot < sysctl && sysctl < read_only && read_only < hostname);
    }

    #[test]
    fn without_a_uts_namespace_of_its_own_the_host_name_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Recorder::default();
        set_up_namespaces(&sys, &spec(dir.path(), &[]), dir.path(), CloneFlags::empty(), vec![])
            .unwrap();
        let calls = sys.calls(dir.path());
        assert_eq!(calls[0], "unshare CLONE_NEWNS");
        assert!(!calls.iter().any(|c| c.starts_with("sethostname")), "{calls:#?}");
    }

    #[test]
    fn a_sysctl_key_that_leaves_proc_sys_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for key in ["net/../../etc/x", "a..b"] {
            let sys = Recorder::default();
            let err = set_up_namespaces(
                &sys,
                &spec(dir.path(), &[(key, "1")]),
                dir.path(),
                CloneFlags::empty(),
                vec![],
            )
            .unwrap_err();
            assert!(err.0.contains("bad sysctl"), "{err}");
            assert!(!sys.calls(dir.path()).iter().any(|c| c.starts_with("sysctl")));
        }
    }
}
