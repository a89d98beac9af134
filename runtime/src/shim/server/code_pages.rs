//! Giving back the page-table entries of code and constants an idle shim no longer uses.
//!
//! A shim lives as long as its pod and spends that life waiting in poll(2), but answering
//! a request (decoding an OCI spec, forking a container) runs a few MiB of code, and the
//! kernel's fault-around maps 64 KiB of neighbouring pages with every page it faults in.
//! Those file pages are shared by every shim through the page cache, yet each shim's RSS
//! counts all it has mapped, once per pod. Once the shim has been idle for a while it
//! drops, just before it goes back to sleep in poll(2), its mappings of file pages it never
//! wrote (`MADV_DONTNEED` on a private, read-only file mapping with no private copies
//! only unmaps them: the next use faults them back from the page cache, a minor fault).
//! A mapping with private (written) pages, such as relocated data, is never touched: it
//! would lose what was written.

use std::time::Duration;

/// How long the shim waits with nothing to do before it releases.
pub const IDLE: Duration = Duration::from_millis(500);

/// Unmaps the pages of this process's releasable mappings.
pub fn release() {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    for (start, len) in releasable(&smaps) {
        advise(start, len, libc::MADV_DONTNEED);
    }
}

fn advise(start: usize, len: usize, advice: libc::c_int) {
    // SAFETY: the range is a whole mapping of this single-threaded process, read from
    // /proc/self/smaps just before; for MADV_DONTNEED it is private, not writable, file
    // backed and holds no private pages, so dropping its entries loses nothing.
    unsafe {
        libc::madvise(start as *mut libc::c_void, len, advice);
    }
}

/// From `/proc/self/smaps`: the private, non-writable, file-backed mappings that hold no
/// anonymous (written, copied-on-write) page, in memory or swapped out: `(start, length)`.
fn releasable(smaps: &str) -> Vec<(usize, usize)> {
    // Each mapping: its range when eligible by its header, and its private page counts.
    let mut maps: Vec<(Option<(usize, usize)>, u64)> = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some(kib) = ["Anonymous:", "Swap:"].contains(&first).then(|| f.next()).flatten() {
            if let Some(m) = maps.last_mut() {
                m.1 += kib.parse::<u64>().unwrap_or(1);
            }
            continue;
        }
        let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) else {
            continue;
        };
        let (perms, _off, _dev, inode) = (f.next(), f.next(), f.next(), f.next());
        let range = usize::from_str_radix(start, 16).ok().zip(usize::from_str_radix(end, 16).ok());
        let eligible = match (range, perms, inode) {
            (Some((s, e)), Some(p), Some(i))
                if p.as_bytes().get(1) == Some(&b'-')
                    && p.as_bytes().get(3) == Some(&b'p')
                    && i != "0"
                    && e > s =>
            {
                Some((s, e - s))
            }
            _ => None,
        };
        maps.push((eligible, 0));
    }
    maps.into_iter().filter(|(_, private)| *private == 0).filter_map(|(m, _)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_private_file_mappings_without_written_pages_are_released() {
        let block = |header: &str, anon: u32, swap: u32| {
            format!(
                "{header}\nSize:               4 kB\nRss:                4 kB\n\
                 Anonymous:          {anon} kB\nSwap:          {swap} kB\nVmFlags: rd mr mw me\n"
            )
        };
        let smaps = [
            block("00400000-00500000 r--p 00000000 fd:01 1234   /usr/bin/berth-shim", 0, 0),
            block("00500000-00800000 r-xp 00100000 fd:01 1234   /usr/bin/berth-shim", 0, 0),
            // Relocated data: written once, a private copy.
            block("00800000-00900000 r--p 00400000 fd:01 1234   /usr/bin/berth-shim", 16, 0),
            // The same, its written pages swapped out.
            block("00880000-00890000 r--p 00400000 fd:01 1234   /usr/bin/berth-shim", 0, 8),
            block("00900000-00901000 rw-p 00500000 fd:01 1234   /usr/bin/berth-shim", 0, 0),
            block("7f0000000000-7f0000001000 r-xs 00000000 00:05 77   /dev/zero", 0, 0),
            block("7f0000002000-7f0000003000 r-xp 00000000 00:00 0 ", 0, 0),
            block("7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0   [vdso]", 0, 0),
        ]
        .concat();
        assert_eq!(releasable(&smaps), [(0x400000, 0x100000), (0x500000, 0x300000)]);
    }

    #[test]
    fn released_code_and_constants_still_run() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(!releasable(&smaps).is_empty(), "a test binary has read-only file mappings");
        release();
        // Code and constants of every mapping fault back in: the formatter, libc.
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
