//! Pressure stall information (PSI) of one cgroup, from v2's `cpu.pressure`,
//! `memory.pressure` and `io.pressure`.
//!
//! The kernel keeps it per cgroup of the v2 tree whatever controllers are enabled there,
//! so a hybrid host's `unified` tree has it too (berth places container processes there).
//! It is absent without CONFIG_PSI, with `psi=0`, and where `cgroup.pressure` was set to
//! 0 (reading then fails).

use std::fs;
use std::path::Path;

/// One line of a pressure file: the share of wall time some (or all) tasks were stalled.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiData {
    /// Cumulative stall time in microseconds.
    pub total_us: u64,
    /// Percentages averaged over 10 s, 60 s and 300 s.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Psi {
    /// Some tasks were stalled (cAdvisor's "waiting").
    pub some: PsiData,
    /// All non-idle tasks were stalled at once (cAdvisor's "stalled"); `None` where the
    /// kernel does not report it (`cpu.pressure` before Linux 5.13).
    pub full: Option<PsiData>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub cpu: Option<Psi>,
    pub memory: Option<Psi>,
    pub io: Option<Psi>,
}

/// The pressure files of `dir` (a v2 cgroup); `None` when none of them reads.
pub fn read(dir: &Path) -> Option<Pressure> {
    let file = |name: &str| fs::read_to_string(dir.join(name)).ok().and_then(|t| parse(&t));
    let p = Pressure {
        cpu: file("cpu.pressure"),
        memory: file("memory.pressure"),
        io: file("io.pressure"),
    };
    (p.cpu.is_some() || p.memory.is_some() || p.io.is_some()).then_some(p)
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and an optional `full ...` line;
/// `None` without a `some` line that has a total.
pub fn parse(text: &str) -> Option<Psi> {
    let (mut some, mut full) = (None, None);
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let slot = match it.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        *slot = data(it);
    }
    Some(Psi { some: some?, full })
}

/// The `key=value` fields of a line; `None` without a parsable `total`. An average that
/// does not parse reads as 0.
fn data<'a>(fields: impl Iterator<Item = &'a str>) -> Option<PsiData> {
    let mut d = PsiData::default();
    let mut total = None;
    for kv in fields {
        let Some((k, v)) = kv.split_once('=') else { continue };
        let avg = || v.parse::<f64>().ok().filter(|x| x.is_finite()).unwrap_or(0.0);
        match k {
            "total" => total = v.parse().ok(),
            "avg10" => d.avg10 = avg(),
            "avg60" => d.avg60 = avg(),
            "avg300" => d.avg300 = avg(),
            _ => {}
        }
    }
    d.total_us = total?;
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full() {
        let p = parse(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n",
        )
        .unwrap();
        assert_eq!(p.some, PsiData { total_us: 123_456, avg10: 1.5, avg60: 0.25, avg300: 0.0 });
        assert_eq!(p.full.unwrap().total_us, 789);
    }

    #[test]
    fn lenient() {
        // cpu.pressure of kernels before 5.13: no full line.
        let p = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").unwrap();
        assert_eq!((p.some.total_us, p.full), (5, None));
        // A full line without a total is no full line; a bad average is 0.
        let p = parse("some avg10=nan avg60=x total=7\nfull avg10=1.00\n").unwrap();
        assert_eq!((p.some.total_us, p.some.avg10, p.some.avg60, p.full), (7, 0.0, 0.0, None));
        for bad in ["", "garbage\n", "full avg10=0.00 total=1\n", "some total=-1\n"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn files_of_a_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read(tmp.path()), None);
        fs::write(
            tmp.path().join("cpu.pressure"),
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
        )
        .unwrap();
        fs::write(tmp.path().join("io.pressure"), "bogus\n").unwrap();
        let p = read(tmp.path()).unwrap();
        assert_eq!(p.cpu.unwrap().some.total_us, 9);
        assert_eq!((p.memory, p.io), (None, None));
    }
}
