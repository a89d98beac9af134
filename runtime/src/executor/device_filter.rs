//! Device access control on cgroup v2: the OCI device rules compiled to an eBPF program
//! of type `BPF_PROG_TYPE_CGROUP_DEVICE` and attached to the container's cgroup.
//!
//! cgroup v2 has no devices controller; the kernel asks the programs attached to a
//! process's cgroup (and its ancestors') whether an open or mknod of a device may
//! proceed. Without one, a container holding CAP_MKNOD could make a node for the host's
//! disk and read it.
//!
//! Written by hand, as runc and crun do: the program is a straight list of comparisons
//! (about six instructions a rule). youki's `libcgroups` does this too, but behind
//! `libbpf-sys` (a vendored C libbpf and libelf) and `rbpf` (a cranelift JIT), for a job
//! that needs four `bpf(2)` commands; cgroups-rs 0.5 writes v1 `devices.*` files only.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JEQ_K: u8 = 0x15;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, access_type being
// (access << 16) | type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

// Registers: r1 the context, then scratch; r2 type, r3 access, r4 major, r5 minor.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | dst, off, imm }
}

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |acc, c| {
        acc | match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        }
    })
}

/// The program for `rules`, read as the v1 devices controller reads them: in order, the
/// last rule that matches an access decides, and nothing matching means deny. A rule
/// allows an access when it names every bit of it (`rw` for an open read-write) and
/// denies an access it shares any bit with.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU32_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU32_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    // Last match wins: test the rules from the end, the first hit returns.
    for rule in rules.iter().rev() {
        let mut block: Vec<Insn> = Vec::new();
        // Each test jumps over the rest of the block when the access does not match;
        // the offsets are filled in once the block's length is known.
        let mut skips: Vec<usize> = Vec::new();
        let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            LinuxDeviceType::P => continue, // FIFOs are not devices the kernel asks about
            LinuxDeviceType::A => None,
        };
        if let Some(t) = typ {
            skips.push(block.len());
            block.push(insn(JMP_JNE_K, R2, 0, 0, t));
        }
        let bits = access_bits(rule.access().as_deref().unwrap_or("rwm"));
        if bits != ACC_MKNOD | ACC_READ | ACC_WRITE || !rule.allow() {
            block.push(insn(ALU32_MOV_X, R1, R3, 0, 0));
            if rule.allow() {
                // Allowed only when no bit outside the rule's is asked for.
                block.push(insn(ALU32_AND_K, R1, 0, 0, !bits & 7));
                skips.push(block.len());
                block.push(insn(JMP_JNE_K, R1, 0, 0, 0));
            } else {
                block.push(insn(ALU32_AND_K, R1, 0, 0, bits));
                skips.push(block.len());
                block.push(insn(JMP_JEQ_K, R1, 0, 0, 0));
            }
        }
        for (reg, value) in [(R4, rule.major()), (R5, rule.minor())] {
            if let Some(v) = value.filter(|v| *v >= 0) {
                skips.push(block.len());
                block.push(insn(JMP_JNE_K, reg, 0, 0, v as i32));
            }
        }
        block.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow())));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        let terminal = skips.is_empty();
        for i in skips {
            block[i].off = (len - i - 1) as i16;
        }
        p.extend(block);
        if terminal {
            // A rule matching every access decides them all: what would follow could
            // never run, and the verifier refuses unreachable instructions.
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

// bpf(2) commands and constants.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The union `bpf_attr`, as a zeroed byte buffer large enough for every command used.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn u32(mut self, at: usize, v: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_int, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: attr is a zero-filled bpf_attr of 128 bytes whose pointers (set by the
    // callers) point at buffers that outlive the call.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, cmd, attr as *mut Attr, std::mem::size_of::<Attr>())
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads `prog` into the kernel; the error carries the verifier's log.
fn load(prog: &[Insn]) -> io::Result<OwnedFd> {
    let license = CString::new("Apache-2.0").expect("no NUL");
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = Attr::new()
        .u32(0, BPF_PROG_TYPE_CGROUP_DEVICE)
        .u32(4, prog.len() as u32)
        .u64(8, prog.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(24, 1) // log_level
        .u32(28, log.len() as u32)
        .u64(32, log.as_mut_ptr() as u64);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a successful PROG_LOAD returns a new file descriptor we now own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(e.kind(), format!("load device program: {e}: {}", text.trim())))
        }
    }
}

/// How many device programs are attached to the cgroup directory `dir` itself.
pub fn attached_count(dir: &Path) -> io::Result<usize> {
    Ok(attached(&File::open(dir)?)?.len())
}

/// IDs of the device programs attached to the cgroup directly.
fn attached(cgroup: &File) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = Attr::new()
        .u32(0, cgroup.as_raw_fd() as u32)
        .u32(4, BPF_CGROUP_DEVICE)
        .u64(16, ids.as_mut_ptr() as u64)
        .u32(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.get_u32(24) as usize);
    Ok(ids)
}

/// Attaches the program for `rules` to the cgroup directory `dir`, then detaches the
/// device programs that were attached there before, so the new rules replace the old
/// without a moment with none.
pub fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> io::Result<()> {
    let cgroup = File::open(dir)?;
    let before = attached(&cgroup)?;
    let prog = load(&program(rules))?;
    let mut attr = Attr::new()
        .u32(0, cgroup.as_raw_fd() as u32)
        .u32(4, prog.as_raw_fd() as u32)
        .u32(8, BPF_CGROUP_DEVICE)
        .u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map_err(|e| io::Error::new(e.kind(), format!("attach device program: {e}")))?;
    for id in before {
        let mut attr = Attr::new().u32(0, id);
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) else { continue };
        // SAFETY: GET_FD_BY_ID returns a new file descriptor we now own.
        let old = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut attr = Attr::new()
            .u32(0, cgroup.as_raw_fd() as u32)
            .u32(4, old.as_raw_fd() as u32)
            .u32(8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut attr)
            .map_err(|e| io::Error::new(e.kind(), format!("detach old device program: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        mm: Option<(i64, i64)>,
        a: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(a);
        if let Some((ma, mi)) = mm {
            b = b.major(ma).minor(mi);
        }
        b.build().unwrap()
    }

    /// Runs the program the way the kernel does, for the instructions it emits.
    fn run(p: &[Insn], typ: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access << 16) | typ) as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_JEQ_K if r[dst] == i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JEQ_K | JMP_JNE_K => {}
                JMP_EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn default_rules_allow_the_standard_devices_and_mknod_only() {
        let (_, rules) = crate::container::devices::devices(&Default::default(), false).unwrap();
        let p = program(&rules);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 1, "/dev/null rw");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 136, 7), 1, "a pts");
        assert_eq!(run(&p, DEV_BLOCK, ACC_MKNOD, 8, 0), 1, "mknod of a disk");
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 0, "reading a disk");
        assert_eq!(run(&p, DEV_BLOCK, ACC_WRITE, 253, 0), 0, "writing a disk");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 10, 200), 1, "tun");
    }

    #[test]
    fn the_last_matching_rule_decides() {
        let rules = [
            rule(true, LinuxDeviceType::A, None, "rwm"),
            rule(false, LinuxDeviceType::B, Some((8, 0)), "w"),
            rule(true, LinuxDeviceType::C, Some((1, 3)), "r"),
        ];
        let p = program(&rules);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 1);
        assert_eq!(run(&p, DEV_BLOCK, ACC_WRITE, 8, 0), 0);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ | ACC_WRITE, 8, 0), 0, "any denied bit denies");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 1, "falls to allow-all");
        let only = [rule(true, LinuxDeviceType::C, Some((1, 3)), "r")];
        let p = program(&only);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 1);
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 0, "w not granted");
        assert_eq!(run(&program(&[]), DEV_CHAR, ACC_READ, 1, 3), 0, "no rules: deny");
    }

    #[test]
    fn privileged_allows_everything() {
        let (_, rules) = crate::container::devices::devices(&Default::default(), true).unwrap();
        let p = program(&rules);
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ | ACC_WRITE | ACC_MKNOD, 8, 0), 1);
        assert_eq!(p.len(), 8, "nothing after the rule that matches all: {p:?}");
    }

    /// The kernel's verifier refuses a program with an instruction no path reaches.
    #[test]
    fn every_instruction_is_reachable() {
        let rules = [
            rule(false, LinuxDeviceType::A, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some((1, 3)), "rwm"),
            rule(true, LinuxDeviceType::A, None, "rwm"),
            rule(true, LinuxDeviceType::B, Some((8, 0)), "r"),
        ];
        for n in 0..=rules.len() {
            let p = program(&rules[..n]);
            let mut seen = vec![false; p.len()];
            let mut todo = vec![0usize];
            while let Some(pc) = todo.pop() {
                if pc >= p.len() || std::mem::replace(&mut seen[pc], true) {
                    continue;
                }
                match p[pc].code {
                    JMP_EXIT => {}
                    JMP_JEQ_K | JMP_JNE_K => {
                        todo.push(pc + 1);
                        todo.push(pc + 1 + p[pc].off as usize);
                    }
                    _ => todo.push(pc + 1),
                }
            }
            assert!(seen.iter().all(|s| *s), "unreachable code for {n} rules: {p:?}");
        }
    }
}
