//! Block I/O of one cgroup: bytes and operations per device, from v2 `io.stat` or v1
//! blkio's `*_recursive` files.
//!
//! Both count bios submitted on behalf of the cgroup, so reads served from the page cache
//! count nothing, and on v1 buffered writes count against whoever writes them back
//! (usually the flusher threads, in the root cgroup): only direct and fsync'd writes land
//! on the container there.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// One device's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u32,
    pub minor: u32,
    /// Set by [`name_devices`]; empty until then.
    pub name: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Sums over [`devices`](Self::devices).
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
    /// By device number; only devices the cgroup did I/O on (the kernel lists no others).
    pub devices: Vec<DeviceIo>,
}

impl IoStats {
    fn from_devices(devices: Vec<DeviceIo>) -> Self {
        let mut s = IoStats::default();
        for d in &devices {
            s.read_bytes = s.read_bytes.saturating_add(d.read_bytes);
            s.write_bytes = s.write_bytes.saturating_add(d.write_bytes);
            s.reads = s.reads.saturating_add(d.reads);
            s.writes = s.writes.saturating_add(d.writes);
        }
        s.devices = devices;
        s
    }
}

/// v2: `io.stat` of `dir`; a v2 cgroup's figures include its descendants'.
pub fn read_v2(dir: &Path) -> IoStats {
    IoStats::from_devices(parse_v2(&fs::read_to_string(dir.join("io.stat")).unwrap_or_default()))
}

/// v1 file pairs (bytes, operations), in order of preference. blk-throttle counts every
/// device, but (as seen on 6.x kernels) only once a throttle limit has been set on the
/// device; BFQ counts only devices it schedules; CFQ is gone from current kernels.
const V1_FILES: [(&str, &str); 3] = [
    ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_serviced_recursive"),
    ("blkio.bfq.io_service_bytes_recursive", "blkio.bfq.io_serviced_recursive"),
    ("blkio.io_service_bytes_recursive", "blkio.io_serviced_recursive"),
];

/// v1: the first of [`V1_FILES`] in `dir` (a blkio hierarchy's cgroup) that lists a device.
pub fn read_v1(dir: &Path) -> IoStats {
    for (bytes, ops) in V1_FILES {
        let Ok(bytes) = fs::read_to_string(dir.join(bytes)) else { continue };
        let ops = fs::read_to_string(dir.join(ops)).unwrap_or_default();
        let devices = parse_v1(&bytes, &ops);
        if !devices.is_empty() {
            return IoStats::from_devices(devices);
        }
    }
    IoStats::default()
}

/// `MAJ:MIN key=value ...` lines. Keys this does not know (`dbytes`, `cost.*` with
/// io.cost, ...) are skipped, as are lines without a device number.
pub fn parse_v2(text: &str) -> Vec<DeviceIo> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some((major, minor)) = it.next().and_then(device) else { continue };
        let d: &mut DeviceIo =
            out.entry((major, minor)).or_insert(DeviceIo { major, minor, ..Default::default() });
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let Ok(v) = v.parse::<u64>() else { continue };
            match k {
                "rbytes" => d.read_bytes = d.read_bytes.saturating_add(v),
                "wbytes" => d.write_bytes = d.write_bytes.saturating_add(v),
                "rios" => d.reads = d.reads.saturating_add(v),
                "wios" => d.writes = d.writes.saturating_add(v),
                _ => {}
            }
        }
    }
    out.into_values().collect()
}

/// `MAJ:MIN Op N` lines of v1's bytes and operations files. `Read` and `Write` are kept;
/// `Sync`, `Async`, `Discard` and `Total` overlap them, and the last line (`Total N`)
/// names no device.
pub fn parse_v1(bytes: &str, ops: &str) -> Vec<DeviceIo> {
    let mut out: BTreeMap<(u32, u32), DeviceIo> = BTreeMap::new();
    for (text, is_bytes) in [(bytes, true), (ops, false)] {
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(dev), Some(op), Some(n)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let (Some((major, minor)), Ok(n)) = (device(dev), n.parse::<u64>()) else {
                continue;
            };
            let d = out.entry((major, minor)).or_insert(DeviceIo {
                major,
                minor,
                ..Default::default()
            });
            let field = match (op, is_bytes) {
                ("Read", true) => &mut d.read_bytes,
                ("Write", true) => &mut d.write_bytes,
                ("Read", false) => &mut d.reads,
                ("Write", false) => &mut d.writes,
                _ => continue,
            };
            *field = field.saturating_add(n);
        }
    }
    out.into_values().collect()
}

fn device(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Where [`name_devices`] looks devices up.
pub const SYS_DEV_BLOCK: &str = "/sys/dev/block";

/// Names the devices of `s` with [`device_name`]. Not cached: a device number can name
/// another device later (loop and device-mapper devices come and go).
pub fn name_devices(s: &mut IoStats, sys: &Path) {
    for d in &mut s.devices {
        d.name = device_name(sys, d.major, d.minor);
    }
}

/// The `/dev` path of a block device, from `sys` (`/sys/dev/block`) — cAdvisor labels its
/// I/O metrics so — else `MAJ:MIN` (a device gone since, or a sysfs-less mount namespace).
pub fn device_name(sys: &Path, major: u32, minor: u32) -> String {
    let uevent = fs::read_to_string(sys.join(format!("{major}:{minor}/uevent")));
    uevent
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(str::trim)
                .filter(|n| !n.is_empty() && !n.contains(".."))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device with `[read_bytes, write_bytes, reads, writes]`.
    fn dev(major: u32, minor: u32, [rb, wb, r, w]: [u64; 4]) -> DeviceIo {
        let name = String::new();
        DeviceIo { major, minor, name, read_bytes: rb, write_bytes: wb, reads: r, writes: w }
    }

    #[test]
    fn v2_lines() {
        let text = "8:16 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=5 dios=6\n\
                    8:0 rbytes=10 wbytes=20 rios=30 wios=40 dbytes=0 dios=0 cost.vrate=100.00 cost.usage=7\n\
                    garbage\n\
                    x:y rbytes=9\n\
                    253:0 rbytes=oops wbytes=8\n";
        let devs = parse_v2(text);
        assert_eq!(
            devs,
            vec![dev(8, 0, [10, 20, 30, 40]), dev(8, 16, [1, 2, 3, 4]), dev(253, 0, [0, 8, 0, 0]),]
        );
        let s = IoStats::from_devices(devs);
        assert_eq!((s.read_bytes, s.write_bytes, s.reads, s.writes), (11, 30, 33, 44));
        assert!(parse_v2("").is_empty());
    }

    #[test]
    fn v1_lines() {
        let bytes = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 8192\n8:0 Async 4096\n\
                     8:0 Discard 0\n8:0 Total 12288\n254:0 Read 1\n254:0 Write x\nTotal 12289\n";
        let ops = "8:0 Read 1\n8:0 Write 2\n8:0 Sync 2\n8:0 Async 1\n8:0 Discard 0\n\
                   8:0 Total 3\nTotal 3\n";
        assert_eq!(
            parse_v1(bytes, ops),
            vec![dev(8, 0, [4096, 8192, 1, 2]), dev(254, 0, [1, 0, 0, 0]),]
        );
        assert!(parse_v1("Total 0\n", "Total 0\n").is_empty());
    }

    #[test]
    fn v1_falls_back_to_a_file_that_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(read_v1(d), IoStats::default());
        fs::write(d.join(V1_FILES[0].0), "Total 0\n").unwrap();
        fs::write(d.join(V1_FILES[0].1), "Total 0\n").unwrap();
        fs::write(d.join(V1_FILES[1].0), "8:0 Read 5\n8:0 Write 6\nTotal 11\n").unwrap();
        fs::write(d.join(V1_FILES[1].1), "8:0 Read 1\n8:0 Write 1\nTotal 2\n").unwrap();
        let s = read_v1(d);
        assert_eq!((s.read_bytes, s.write_bytes, s.reads, s.writes), (5, 6, 1, 1));
        assert_eq!(s.devices.len(), 1);
    }

    #[test]
    fn device_names_from_uevent() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("254:0")).unwrap();
        fs::write(tmp.path().join("254:0/uevent"), "MAJOR=254\nMINOR=0\nDEVNAME=vda\n").unwrap();
        fs::create_dir_all(tmp.path().join("8:1")).unwrap();
        fs::write(tmp.path().join("8:1/uevent"), "MAJOR=8\nMINOR=1\n").unwrap();
        assert_eq!(device_name(tmp.path(), 254, 0), "/dev/vda");
        assert_eq!(device_name(tmp.path(), 8, 1), "8:1");
        assert_eq!(device_name(tmp.path(), 7, 7), "7:7");
        let mut s = IoStats::from_devices(parse_v2("254:0 rbytes=1\n8:1 wbytes=2\n"));
        name_devices(&mut s, tmp.path());
        let names: Vec<&str> = s.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["8:1", "/dev/vda"]);
    }
}
