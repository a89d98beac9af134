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
