//! seccomp filters from an OCI `linux.seccomp` object, compiled with libseccomp.
//!
//! Why libseccomp (the system library, through the `libseccomp` crate) rather than a
//! pure-Rust BPF compiler such as `seccompiler`: the OCI seccomp object *is* libseccomp's
//! model — syscalls by name on several architectures, one action per rule (ALLOW,
//! ERRNO(n), KILL, TRAP, LOG…), argument comparators with the same names — so Localhost
//! profiles written for runc/containerd behave identically. seccompiler has no name
//! resolution and one match action per filter, which would mean a hand-kept syscall table
//! per architecture and stacking filters to emulate mixed actions.

use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use super::error::{Error, Result};

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32)
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error("seccomp: SCMP_ACT_NOTIFY is not supported".into()))
        }
    })
}

fn op(o: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // OCI: `value` is the mask, `valueTwo` the expected value.
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error(format!("seccomp: {what}: {e}"))
}

/// Compiles the profile. Syscall names this libseccomp does not know are skipped (as
/// runc does: profiles list syscalls of newer kernels and other architectures).
/// No-new-privileges is left to the caller.
pub fn build(profile: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err("init", e))?;
    ctx.set_ctl_nnp(false).map_err(|e| err("nnp attribute", e))?;
    for arch in profile.architectures().iter().flatten() {
        let name = arch.to_string();
        if let Ok(a) = ScmpArch::from_str(&name) {
            if a != ScmpArch::Native {
                ctx.add_arch(a).map_err(|e| err(&format!("add arch {name}"), e))?;
            }
        }
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue; // libseccomp refuses rules that repeat the default action
        }
        let args = rule.args().clone().unwrap_or_default();
        // Conditions on distinct arguments are ANDed in one rule; several conditions on
        // the same argument become separate rules (ORed), libseccomp's own limit.
        let mut groups: Vec<Vec<ScmpArgCompare>> = Vec::new();
        let same_index = {
            let mut idx: Vec<usize> = args.iter().map(|a| a.index()).collect();
            idx.sort_unstable();
            idx.windows(2).any(|w| w[0] == w[1])
        };
        let cmp = |a: &oci_spec::runtime::LinuxSeccompArg| {
            ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value())
        };
        if args.is_empty() {
            groups.push(Vec::new());
        } else if same_index {
            groups.extend(args.iter().map(|a| vec![cmp(a)]));
        } else {
            groups.push(args.iter().map(cmp).collect());
        }
        for name in rule.names() {
            let Ok(sys) = ScmpSyscall::from_name(name) else { continue };
            for g in &groups {
                ctx.add_rule_conditional(act, sys, g)
                    .map_err(|e| err(&format!("rule for {name}"), e))?;
            }
        }
    }
    Ok(ctx)
}

/// Loads a compiled filter into the calling thread.
pub fn load(ctx: &ScmpFilterContext) -> Result<()> {
    ctx.load().map_err(|e| err("load", e))
}
