//! Giving back an idle shim's written pages that hold nothing it needs: the free pages
//! of its heap and its stack below the frame it sleeps in.
//!
//! Unlike code pages (`code_pages`), these are private to each shim, one per pod, so
//! every pod's memory counts them in full (PSS as well as RSS). A request that needs
//! them again faults them back in, zero-filled, a minor fault each.

use std::ops::Range;

/// How much of the stack below the releasing frame is kept: room for what runs between
/// the release and the poll (madvise, the code-page release, poll) without faulting.
const STACK_KEPT_BELOW: usize = 16 * 1024;

/// Releases the heap's free pages and the main thread's unused stack. Called by the
/// single-threaded shim just before it sleeps.
pub fn release() {
    let stack = std::fs::read_to_string("/proc/self/maps").ok().and_then(|m| stack_range(&m));
    // SAFETY: malloc_trim hands free heap pages back to the kernel; live data stays.
    unsafe { libc::malloc_trim(0) };
    if let Some(stack) = stack {
        release_stack_below_here(stack);
    }
}

/// The main thread's stack mapping, from `/proc/self/maps`.
fn stack_range(maps: &str) -> Option<Range<usize>> {
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    Some(usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?)
}

/// The page-aligned part of `stack` more than [`STACK_KEPT_BELOW`] below the stack
/// pointer `sp`; `None` when `sp` is not in `stack` (another thread's stack, as in
/// tests) or nothing is that far below.
fn unused_below(stack: &Range<usize>, sp: usize, page: usize) -> Option<Range<usize>> {
    if !stack.contains(&sp) {
        return None;
    }
    let end = sp.checked_sub(STACK_KEPT_BELOW)? & !(page - 1);
    (end > stack.start).then_some(stack.start..end)
}

#[inline(never)]
fn release_stack_below_here(stack: Range<usize>) {
    let marker = 0u8;
    let sp = std::ptr::addr_of!(marker) as usize;
    // SAFETY: sysconf with a valid name.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let Some(unused) = unused_below(&stack, sp, page) else { return };
    // SAFETY: the range is this thread's stack below its stack pointer by more than the
    // kept margin: in the single-threaded shim nothing lives there now (a signal handler
    // runs within the margin, and only after this call returns). MADV_DONTNEED on private
    // anonymous memory drops the pages; the next touch gets zeroed ones.
    unsafe {
        libc::madvise(unused.start as *mut libc::c_void, unused.len(), libc::MADV_DONTNEED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_mapping_is_found_in_maps() {
        let maps = "00400000-00500000 r-xp 00000000 fd:01 12 /usr/bin/berth-shim\n\
                    7ffd0000-7ffe0000 rw-p 00000000 00:00 0                          [stack]\n\
                    7fff0000-7fff2000 r-xp 00000000 00:00 0                          [vdso]\n";
        assert_eq!(stack_range(maps), Some(0x7ffd0000..0x7ffe0000));
        assert_eq!(stack_range("00400000-00500000 r-xp 0 fd:01 12 /bin/x\n"), None);
    }

    #[test]
    fn only_the_stack_well_below_the_stack_pointer_is_released() {
        let stack = 0x10000..0x30000;
        // 16 KiB kept below sp, rounded down to the page.
        assert_eq!(unused_below(&stack, 0x2f800, 0x1000), Some(0x10000..0x2b000));
        // Too close to the bottom: nothing.
        assert_eq!(unused_below(&stack, 0x13000, 0x1000), None);
        // Not this stack (a test thread's): nothing.
        assert_eq!(unused_below(&stack, 0x40000, 0x1000), None);
    }

    #[test]
    fn release_leaves_live_data_alone() {
        let kept: Vec<u64> = (0..10_000).collect();
        let freed: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 16 * 1024]).collect();
        drop(freed);
        release();
        assert_eq!(kept.iter().sum::<u64>(), 49_995_000);
    }
}
