//! The CRI container log format.
//!
//! Each record is `<timestamp> <stream> <tag> <text>\n`: an RFC 3339 timestamp with
//! nanoseconds in UTC, `stdout` or `stderr`, `F` for a record that ends a line and `P`
//! for a part of a longer one. The kubelet's reader (`pkg/kubelet/kuberuntime/logs`)
//! joins `P` records with the next records of the same stream until an `F`, and prints
//! an `F` record's text followed by a newline.
//!
//! Semantics, as containerd's CRI plugin writes them (the kubelet's reader expects them):
//! * a line is written once its newline arrives; the newline itself is not part of the
//!   text (the record's own `\n` ends it);
//! * a line longer than [`MAX_LINE`] bytes is cut into `P` records of [`MAX_LINE`] bytes,
//!   the rest following as more records, the last one `F`;
//! * a partial line left when the stream ends (the process exited without a final
//!   newline) is written as `F`: the line is over, and a `P` with nothing after it would
//!   leave the reader waiting for a continuation that never comes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Longest text in one record (16 KiB, as containerd and CRI-O).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Partial,
    Full,
}

/// Formats unix nanoseconds as RFC 3339 in UTC with nine fractional digits,
/// e.g. `2016-10-06T00:17:09.669794202Z`.
pub fn format_timestamp(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends one record to `out`.
pub fn format_record(out: &mut Vec<u8>, unix_ns: i64, stream: Stream, tag: Tag, text: &[u8]) {
    out.extend_from_slice(format_timestamp(unix_ns).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if tag == Tag::Full { b" F " } else { b" P " });
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Cuts one stream's bytes into records. Holds at most [`MAX_LINE`] bytes of an
/// unfinished line.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> Self {
        Self { stream, pending: Vec::new() }
    }

    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// Feeds bytes read from the stream; complete records are formatted into `out`.
    pub fn push(&mut self, mut data: &[u8], unix_ns: i64, out: &mut Vec<u8>) {
        while !data.is_empty() {
            let room = MAX_LINE - self.pending.len();
            let window = &data[..data.len().min(room)];
            if let Some(nl) = window.iter().position(|&b| b == b'\n') {
                self.pending.extend_from_slice(&window[..nl]);
                format_record(out, unix_ns, self.stream, Tag::Full, &self.pending);
                self.pending.clear();
                data = &data[nl + 1..];
            } else if window.len() == room {
                self.pending.extend_from_slice(window);
                data = &data[room..];
                if data.is_empty() {
                    // Hold the full part: the next byte (or the end of the stream) says
                    // whether it ends the line. Written now as `P`, a stream that ended
                    // here would leave the reader waiting for a continuation.
                    break;
                }
                // A full record; if the very next byte is the newline, this part is the
                // whole (rest of the) line.
                if data.first() == Some(&b'\n') {
                    format_record(out, unix_ns, self.stream, Tag::Full, &self.pending);
                    data = &data[1..];
                } else {
                    format_record(out, unix_ns, self.stream, Tag::Partial, &self.pending);
                }
                self.pending.clear();
            } else {
                self.pending.extend_from_slice(window);
                data = &[];
            }
        }
    }

    /// The stream ended: writes what is left of a line as a final `F` record.
    pub fn finish(&mut self, unix_ns: i64, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            format_record(out, unix_ns, self.stream, Tag::Full, &self.pending);
            self.pending.clear();
            self.pending.shrink_to_fit();
        }
    }
}

/// A container's log file, re-openable after the kubelet rotated it (renamed it away).
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Option<File>,
    /// Writes are failing (a full disk): the shim reports the first failure only.
    failing: bool,
}

impl LogFile {
    /// Opens (creating, appending) `path`; an empty path discards everything.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut log = Self { path: path.to_path_buf(), file: None, failing: false };
        log.reopen()?;
        Ok(log)
    }

    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.path)?;
        self.file = Some(file);
        Ok(())
    }

    pub fn write(&mut self, records: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) if !records.is_empty() => f.write_all(records),
            _ => Ok(()),
        }
    }

    /// Writes `records`, dropping them if the file cannot take them; returns the error
    /// only when writes start failing. A container writing to a full disk would
    /// otherwise cost one line of the shim's own log per read, and that log lives on
    /// the volatile state's tmpfs, in memory.
    pub fn write_or_drop(&mut self, records: &[u8]) -> Option<io::Error> {
        if records.is_empty() {
            return None;
        }
        match self.write(records) {
            Ok(()) => {
                self.failing = false;
                None
            }
            Err(e) if !self.failing => {
                self.failing = true;
                Some(e)
            }
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(chunks: &[&[u8]], finish: bool) -> String {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, 0, &mut out);
        }
        if finish {
            s.finish(0, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    const TS: &str = "1970-01-01T00:00:00.000000000Z";

    #[test]
    fn a_failing_log_reports_once_until_it_recovers() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let mut log = LogFile::open(Path::new("/dev/full")).unwrap();
        assert!(log.write_or_drop(b"a\n").is_some());
        for _ in 0..100 {
            assert!(log.write_or_drop(b"a\n").is_none());
        }
        assert!(log.write_or_drop(b"").is_none(), "nothing to write cannot fail");
        assert!(log.write_or_drop(b"a\n").is_none(), "and does not reset the failure");
    }

    #[test]
    fn timestamps_are_rfc3339_nano_utc() {
        assert_eq!(format_timestamp(0), TS);
        assert_eq!(format_timestamp(1_475_713_029_669_794_202), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(format_timestamp(951_782_400_000_000_005), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(format_timestamp(4_102_444_799_999_999_999), "2099-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn complete_lines_are_full_records() {
        assert_eq!(
            records(&[b"hi\nthere\n"], false),
            format!("{TS} stdout F hi\n{TS} stdout F there\n")
        );
        assert_eq!(records(&[b"\n"], false), format!("{TS} stdout F \n"));
    }

    #[test]
    fn lines_are_joined_across_reads() {
        assert_eq!(records(&[b"he", b"llo", b"\nx"], false), format!("{TS} stdout F hello\n"));
    }

    #[test]
    fn a_partial_line_at_eof_is_full() {
        assert_eq!(
            records(&[b"a\nno newline"], true),
            format!("{TS} stdout F a\n{TS} stdout F no newline\n")
        );
        assert_eq!(records(&[b"a\n"], true), format!("{TS} stdout F a\n"));
    }

    #[test]
    fn long_lines_are_split_into_partials() {
        let mut line = vec![b'x'; MAX_LINE * 2 + 10];
        line.push(b'\n');
        let out = records(&[&line[..1000], &line[1000..]], false);
        let recs: Vec<&str> = out.lines().collect();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0], format!("{TS} stdout P {}", "x".repeat(MAX_LINE)));
        assert_eq!(recs[1], format!("{TS} stdout P {}", "x".repeat(MAX_LINE)));
        assert_eq!(recs[2], format!("{TS} stdout F {}", "x".repeat(10)));
    }

    #[test]
    fn a_line_of_exactly_max_is_one_full_record() {
        let mut line = vec![b'y'; MAX_LINE];
        line.extend_from_slice(b"\nz\n");
        let out = records(&[&line], false);
        assert_eq!(out, format!("{TS} stdout F {}\n{TS} stdout F z\n", "y".repeat(MAX_LINE)));
        // Split at the boundary across two reads: the newline arrives in the next read,
        // and the held part still becomes one full record.
        let out = records(&[&line[..MAX_LINE], &line[MAX_LINE..]], false);
        assert_eq!(out, format!("{TS} stdout F {}\n{TS} stdout F z\n", "y".repeat(MAX_LINE)));
        // A stream ending right at the boundary ends with an `F`, never a dangling `P`.
        let out = records(&[&line[..MAX_LINE]], true);
        assert_eq!(out, format!("{TS} stdout F {}\n", "y".repeat(MAX_LINE)));
    }

    #[test]
    fn log_file_reopens_after_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = LogFile::open(&path).unwrap();
        log.write(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        log.write(b"two\n").unwrap();
        log.reopen().unwrap();
        log.write(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("c.log.1")).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let mut none = LogFile::open(Path::new("")).unwrap();
        none.write(b"dropped").unwrap();
    }
}
