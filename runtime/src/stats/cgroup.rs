//! Resource usage of one cgroup, read from cgroupfs v1 and v2.
//!
//! A hybrid host has the v1 controllers under `/sys/fs/cgroup/<ctrl>` and a v2 tree
//! (often without controllers) at `/sys/fs/cgroup/unified`; a v2-only host has one tree
//! with everything. Each figure is taken from the v1 hierarchy that has its controller,
//! else from the v2 tree when it has the file. A cgroup that does not exist (yet: a
//! created container before its process) reads as zeros.
//!
//! Block I/O is in [`super::io`], pressure (v2 only) in [`super::pressure`].

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use super::io::{self, IoStats};
use super::pressure::{self, Pressure};
use crate::cgroupfs::Hierarchy;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Cumulative CPU time, all cores, in nanoseconds.
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub usage: u64,
    /// Usage minus inactive file pages: what the kubelet evicts and OOM-kills on.
    pub working_set: u64,
    pub rss: u64,
    pub cache: u64,
    pub mapped_file: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    pub swap: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// `None`: unlimited.
    pub limit: Option<u64>,
    pub max_usage: u64,
    pub failcnt: u64,
    pub oom_kills: u64,
}

impl MemoryStats {
    /// The limit minus the working set, when there is a limit.
    pub fn available(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.working_set))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessStats {
    pub processes: u64,
    pub threads: u64,
    /// `pids.max`; `None`: unlimited.
    pub threads_max: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    /// The cgroup exists on at least one hierarchy.
    pub exists: bool,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub process: ProcessStats,
    pub io: IoStats,
    /// `None`: no pressure files (no v2 tree, or PSI disabled).
    pub pressure: Option<Pressure>,
    /// Configured limits (the container_spec_* metrics).
    pub spec: SpecStats,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecStats {
    pub cpu_shares: u64,
    pub cpu_period: u64,
    /// `None`: no quota.
    pub cpu_quota: Option<u64>,
}

/// v1 limits at or above this mean "no limit" (the kernel's page-rounded i64::MAX).
const V1_UNLIMITED: u64 = 1 << 62;

/// Reads the usage of cgroup `rel` (relative to each hierarchy's root).
pub fn read(hs: &[Hierarchy], rel: &str) -> CgroupStats {
    let rel = rel.trim_matches('/');
    let v1 = |c: &str| {
        hs.iter().find(|h| !h.v2 && h.controllers.iter().any(|x| x == c)).map(|h| h.mount.join(rel))
    };
    let v2 = hs.iter().find(|h| h.v2).map(|h| h.mount.join(rel));
    let mut s =
        CgroupStats { exists: hs.iter().any(|h| h.mount.join(rel).is_dir()), ..Default::default() };
    if !s.exists {
        return s;
    }

    match (v1("cpuacct"), &v2) {
        (Some(dir), _) => s.cpu = cpu_v1(&dir, v1("cpu").as_deref()),
        (None, Some(dir)) => s.cpu = cpu_v2(&keyed(&dir.join("cpu.stat"))),
        (None, None) => {}
    }
    match (v1("memory"), &v2) {
        (Some(dir), _) => s.memory = memory_v1(&dir),
        (None, Some(dir)) if dir.join("memory.current").exists() => s.memory = memory_v2(dir),
        _ => {}
    }
    if let Some(dir) = v1("cpu") {
        s.spec.cpu_shares = number(&dir.join("cpu.shares")).unwrap_or(0);
        s.spec.cpu_period = number(&dir.join("cpu.cfs_period_us")).unwrap_or(0);
        s.spec.cpu_quota =
            signed(&dir.join("cpu.cfs_quota_us")).filter(|q| *q > 0).map(|q| q as u64);
    } else if let Some(dir) = v2.as_ref().filter(|d| d.join("cpu.max").exists()) {
        let max = fs::read_to_string(dir.join("cpu.max")).unwrap_or_default();
        let mut parts = max.split_whitespace();
        s.spec.cpu_quota = parts.next().and_then(|q| q.parse().ok());
        s.spec.cpu_period = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        s.spec.cpu_shares = number(&dir.join("cpu.weight")).map(weight_to_shares).unwrap_or(0);
    }

    match (v1("blkio"), &v2) {
        (Some(dir), _) => s.io = io::read_v1(&dir),
        (None, Some(dir)) if dir.join("io.stat").exists() => s.io = io::read_v2(dir),
        _ => {}
    }
    s.pressure = v2.as_deref().and_then(pressure::read);

    // Processes and threads: any hierarchy lists them; prefer one with pids.
    let (pids_dir, is_v2) = match (v1("pids"), &v2) {
        (Some(d), _) => (Some(d), false),
        (None, Some(d)) => (Some(d.clone()), true),
        (None, None) => (v1("memory").or_else(|| v1("cpuacct")), false),
    };
    if let Some(dir) = pids_dir {
        s.process.processes = count_lines_recursive(&dir, "cgroup.procs");
        s.process.threads =
            count_lines_recursive(&dir, if is_v2 { "cgroup.threads" } else { "tasks" });
        s.process.threads_max = number(&dir.join("pids.max"));
    }
    s
}

fn cpu_v1(cpuacct: &Path, cpu: Option<&Path>) -> CpuStats {
    let ticks = keyed(&cpuacct.join("cpuacct.stat"));
    // cpuacct.stat counts USER_HZ ticks.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    };
    let ns = |k: &str| ticks.get(k).copied().unwrap_or(0) * (1_000_000_000 / hz);
    let throttle = cpu.map(|d| keyed(&d.join("cpu.stat"))).unwrap_or_default();
    let t = |k: &str| throttle.get(k).copied().unwrap_or(0);
    CpuStats {
        usage_ns: number(&cpuacct.join("cpuacct.usage")).unwrap_or(0),
        user_ns: ns("user"),
        system_ns: ns("system"),
        periods: t("nr_periods"),
        throttled_periods: t("nr_throttled"),
        throttled_ns: t("throttled_time"),
    }
}

fn cpu_v2(stat: &HashMap<String, u64>) -> CpuStats {
    let us = |k: &str| stat.get(k).copied().unwrap_or(0).saturating_mul(1000);
    CpuStats {
        usage_ns: us("usage_usec"),
        user_ns: us("user_usec"),
        system_ns: us("system_usec"),
        periods: stat.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
        throttled_ns: us("throttled_usec"),
    }
}

fn memory_v1(dir: &Path) -> MemoryStats {
    let stat = keyed(&dir.join("memory.stat"));
    let g = |k: &str| stat.get(k).copied().unwrap_or(0);
    let usage = number(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
    let inactive_file = g("total_inactive_file");
    MemoryStats {
        usage,
        working_set: usage.saturating_sub(inactive_file),
        rss: g("total_rss"),
        cache: g("total_cache"),
        mapped_file: g("total_mapped_file"),
        active_file: g("total_active_file"),
        inactive_file,
        swap: g("total_swap"),
        page_faults: g("total_pgfault"),
        major_page_faults: g("total_pgmajfault"),
        limit: number(&dir.join("memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED),
        max_usage: number(&dir.join("memory.max_usage_in_bytes")).unwrap_or(0),
        failcnt: number(&dir.join("memory.failcnt")).unwrap_or(0),
        oom_kills: keyed(&dir.join("memory.oom_control")).get("oom_kill").copied().unwrap_or(0),
    }
}

fn memory_v2(dir: &Path) -> MemoryStats {
    let stat = keyed(&dir.join("memory.stat"));
    let events = keyed(&dir.join("memory.events"));
    let g = |k: &str| stat.get(k).copied().unwrap_or(0);
    let usage = number(&dir.join("memory.current")).unwrap_or(0);
    let inactive_file = g("inactive_file");
    MemoryStats {
        usage,
        working_set: usage.saturating_sub(inactive_file),
        rss: g("anon"),
        cache: g("file"),
        mapped_file: g("file_mapped"),
        active_file: g("active_file"),
        inactive_file,
        swap: number(&dir.join("memory.swap.current")).unwrap_or(0),
        page_faults: g("pgfault"),
        major_page_faults: g("pgmajfault"),
        // "max" does not parse: unlimited.
        limit: number(&dir.join("memory.max")),
        max_usage: number(&dir.join("memory.peak")).unwrap_or(0),
        failcnt: events.get("max").copied().unwrap_or(0),
        oom_kills: events.get("oom_kill").copied().unwrap_or(0),
    }
}

/// v2 `cpu.weight` back to v1 shares (the inverse of the OCI runtimes' conversion).
fn weight_to_shares(w: u64) -> u64 {
    2 + (w.saturating_sub(1) * 262_142) / 9999
}

fn number(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn signed(path: &Path) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, ...) of a file; missing file: empty.
fn keyed(path: &Path) -> HashMap<String, u64> {
    parse_keyed(&fs::read_to_string(path).unwrap_or_default())
}

pub fn parse_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// Lines of `file` in `dir` and every cgroup below it: v1 and v2 list only a cgroup's own
/// members, and a pod's processes live in its containers' cgroups.
fn count_lines_recursive(dir: &Path, file: &str) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = fs::read_to_string(d.join(file)) {
            total += text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        }
        if let Ok(entries) = fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write(dir: &Path, file: &str, text: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(file), text).unwrap();
    }

    fn hierarchy(mount: PathBuf, v2: bool, controllers: &[&str]) -> Hierarchy {
        Hierarchy { mount, v2, controllers: controllers.iter().map(|c| c.to_string()).collect() }
    }

    #[test]
    fn v1_hybrid_figures() {
        let tmp = tempfile::tempdir().unwrap();
        let cpu = tmp.path().join("cpu,cpuacct");
        let mem = tmp.path().join("memory");
        let pids = tmp.path().join("pids");
        let blkio = tmp.path().join("blkio");
        let unified = tmp.path().join("unified");
        let rel = "pod/c1";
        write(&cpu.join(rel), "cpuacct.usage", "2500000000\n");
        write(&cpu.join(rel), "cpuacct.stat", "user 150\nsystem 50\n");
        write(&cpu.join(rel), "cpu.stat", "nr_periods 10\nnr_throttled 2\nthrottled_time 7\n");
        write(&cpu.join(rel), "cpu.shares", "512\n");
        write(&cpu.join(rel), "cpu.cfs_quota_us", "-1\n");
        write(&cpu.join(rel), "cpu.cfs_period_us", "100000\n");
        write(&mem.join(rel), "memory.usage_in_bytes", "100000000\n");
        write(&mem.join(rel), "memory.limit_in_bytes", "9223372036854771712\n");
        write(
            &mem.join(rel),
            "memory.stat",
            "cache 1\nrss 2\ntotal_cache 30000000\ntotal_rss 67108864\ntotal_inactive_file 20000000\ntotal_pgfault 99\ntotal_pgmajfault 3\n",
        );
        write(
            &mem.join(rel),
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        write(&pids.join(rel), "cgroup.procs", "10\n11\n");
        write(&pids.join(rel), "tasks", "10\n11\n12\n");
        write(&pids.join(rel).join("sub"), "cgroup.procs", "13\n");
        write(&pids.join(rel).join("sub"), "tasks", "13\n");
        write(&pids.join(rel), "pids.max", "max\n");
        write(
            &blkio.join(rel),
            "blkio.throttle.io_service_bytes_recursive",
            "254:0 Read 4096\n254:0 Write 1048576\n254:0 Sync 1048576\n254:0 Async 4096\n254:0 Discard 0\n254:0 Total 1052672\nTotal 1052672\n",
        );
        write(
            &blkio.join(rel),
            "blkio.throttle.io_serviced_recursive",
            "254:0 Read 1\n254:0 Write 16\n254:0 Total 17\nTotal 17\n",
        );
        // The unified tree has no io controller; its io.stat (were there one) is ignored.
        write(&unified.join(rel), "io.stat", "254:0 rbytes=9 wbytes=9 rios=9 wios=9\n");
        let hs = vec![
            hierarchy(unified.clone(), true, &[]),
            hierarchy(cpu, false, &["cpu", "cpuacct"]),
            hierarchy(mem, false, &["memory"]),
            hierarchy(pids, false, &["pids"]),
            hierarchy(blkio, false, &["blkio"]),
        ];
        let s = read(&hs, "/pod/c1");
        assert!(s.exists);
        assert_eq!(s.cpu.usage_ns, 2_500_000_000);
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(s.cpu.user_ns, 150 * (1_000_000_000 / hz));
        assert_eq!((s.cpu.periods, s.cpu.throttled_periods, s.cpu.throttled_ns), (10, 2, 7));
        assert_eq!(s.memory.usage, 100_000_000);
        assert_eq!(s.memory.working_set, 80_000_000);
        assert_eq!(s.memory.rss, 67_108_864);
        assert_eq!(s.memory.limit, None);
        assert_eq!(s.memory.available(), None);
        assert_eq!((s.memory.page_faults, s.memory.major_page_faults), (99, 3));
        assert_eq!(s.memory.oom_kills, 1);
        assert_eq!((s.process.processes, s.process.threads), (3, 4));
        assert_eq!(s.process.threads_max, None);
        assert_eq!(s.spec, SpecStats { cpu_shares: 512, cpu_period: 100_000, cpu_quota: None });
        assert_eq!(
            (s.io.read_bytes, s.io.write_bytes, s.io.reads, s.io.writes),
            (4096, 1_048_576, 1, 16)
        );
        assert_eq!((s.io.devices.len(), s.io.devices[0].major), (1, 254));
        assert_eq!(s.pressure, None, "no pressure files in the unified tree");

        // PSI is per cgroup of the v2 tree even without controllers there.
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n";
        write(&unified.join(rel), "cpu.pressure", psi);
        let p = read(&hs, "pod/c1").pressure.unwrap();
        assert_eq!((p.cpu.unwrap().some.total_us, p.cpu.unwrap().full.unwrap().total_us), (42, 7));
        assert_eq!((p.memory, p.io), (None, None));
    }

    #[test]
    fn v2_figures() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pod/c1");
        write(&dir, "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 9\n");
        write(&dir, "cpu.max", "50000 100000\n");
        write(&dir, "cpu.weight", "100\n");
        write(&dir, "memory.current", "5000\n");
        write(&dir, "memory.max", "8000\n");
        write(&dir, "memory.stat", "anon 3000\nfile 2000\ninactive_file 1000\npgfault 5\n");
        write(&dir, "memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n");
        write(&dir, "cgroup.procs", "1\n");
        write(&dir, "cgroup.threads", "1\n2\n");
        write(&dir, "pids.max", "100\n");
        write(
            &dir,
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n8:16 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
        );
        write(&dir, "cpu.pressure", "some avg10=1.00 avg60=0.50 avg300=0.10 total=2000000\n");
        write(
            &dir,
            "memory.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=30\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=20\n",
        );
        write(
            &dir,
            "io.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=3000001\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n",
        );
        let hs = vec![hierarchy(tmp.path().to_path_buf(), true, &[])];
        let s = read(&hs, "pod/c1");
        assert_eq!(
            (s.cpu.usage_ns, s.cpu.user_ns, s.cpu.system_ns),
            (1_500_000, 1_000_000, 500_000)
        );
        assert_eq!(s.cpu.throttled_ns, 9000);
        assert_eq!((s.memory.usage, s.memory.working_set, s.memory.rss), (5000, 4000, 3000));
        assert_eq!((s.memory.limit, s.memory.available()), (Some(8000), Some(4000)));
        assert_eq!((s.memory.failcnt, s.memory.oom_kills), (2, 1));
        assert_eq!(
            (s.process.processes, s.process.threads, s.process.threads_max),
            (1, 2, Some(100))
        );
        assert_eq!(s.spec.cpu_quota, Some(50_000));
        assert_eq!(s.spec.cpu_shares, weight_to_shares(100));
        assert_eq!((weight_to_shares(1), weight_to_shares(10_000)), (2, 262_144));
        assert_eq!(
            (s.io.read_bytes, s.io.write_bytes, s.io.reads, s.io.writes),
            (4097, 8194, 4, 6)
        );
        assert_eq!(s.io.devices.iter().map(|d| d.minor).collect::<Vec<_>>(), [0, 16]);
        let p = s.pressure.unwrap();
        let cpu = p.cpu.unwrap();
        assert_eq!((cpu.some.total_us, cpu.some.avg10, cpu.full), (2_000_000, 1.0, None));
        assert_eq!(p.memory.unwrap().full.unwrap().total_us, 20);
        assert_eq!(p.io.unwrap().some.total_us, 3_000_001);
    }

    #[test]
    fn garbage_files_read_as_zeros() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        for f in ["cpu.stat", "memory.current", "memory.stat", "io.stat", "cpu.pressure"] {
            write(&dir, f, "\u{0}garbage 1 2 = =x\n:\n1:2:3 rbytes==\n");
        }
        let hs = vec![hierarchy(tmp.path().to_path_buf(), true, &[])];
        let s = read(&hs, "c");
        assert!(s.exists);
        assert_eq!(
            (s.cpu.usage_ns, s.memory.usage, s.io.clone(), s.pressure),
            (0, 0, IoStats::default(), None)
        );
    }

    #[test]
    fn a_missing_cgroup_reads_as_zeros() {
        let tmp = tempfile::tempdir().unwrap();
        let hs = vec![hierarchy(tmp.path().to_path_buf(), true, &[])];
        assert_eq!(read(&hs, "nope"), CgroupStats::default());
    }
}
