//! Unit properties: the limits of a container or pod in the names systemd gives them.

use oci_spec::runtime::LinuxResources;
use zbus::zvariant::Value;

/// A unit property as StartTransientUnit and SetUnitProperties take it.
pub type Property = (&'static str, Value<'static>);

/// systemd's "no limit".
const INFINITY: u64 = u64::MAX;

pub(crate) fn accounting() -> Vec<Property> {
    vec![
        ("MemoryAccounting", Value::from(true)),
        ("TasksAccounting", Value::from(true)),
        ("IOAccounting", Value::from(true)),
        ("CPUAccounting", Value::from(true)),
    ]
}

/// A container's transient scope: in `slice`, holding `pid`, delegated (berth writes
/// what systemd has no property for), with the container's limits.
pub fn scope_properties(
    unit: &str,
    slice: &str,
    pid: u32,
    r: Option<&LinuxResources>,
) -> Result<Vec<Property>, String> {
    let mut p = vec![
        ("Description", Value::from(format!("berth container {unit}"))),
        ("Slice", Value::from(slice.to_string())),
        ("Delegate", Value::from(true)),
        ("PIDs", Value::from(vec![pid])),
        ("DefaultDependencies", Value::from(false)),
    ];
    p.extend(accounting());
    if let Some(r) = r {
        p.extend(resource_properties(r)?);
    }
    Ok(p)
}

/// `CPUQuotaPeriodUSec` and `CPUQuotaPerSecUSec`. systemd keeps the quota in whole
/// percent of a CPU, so it is rounded up to 10 ms per second (as runc does): the exact
/// quota berth writes to `cpu.max` afterwards then never exceeds what systemd allows.
pub(crate) fn cpu_quota(quota: i64, period: u64) -> Vec<Property> {
    let period = if period == 0 { 100_000 } else { period };
    let mut p = vec![("CPUQuotaPeriodUSec", Value::from(period))];
    let per_sec = if quota > 0 {
        let us = (quota as u64).saturating_mul(1_000_000) / period;
        us.div_ceil(10_000) * 10_000
    } else {
        INFINITY
    };
    p.push(("CPUQuotaPerSecUSec", Value::from(per_sec)));
    p
}

/// A cpuset list (`0-2,4`) as the bit mask systemd's `AllowedCPUs` takes (byte 0 holds
/// CPUs 0–7, lowest bit first).
fn cpu_mask(list: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("cpuset {list:?} is not a CPU list");
    let mut mask = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let (a, b): (usize, usize) =
            (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
        if a > b || b >= 8192 {
            return Err(bad());
        }
        for cpu in a..=b {
            if mask.len() <= cpu / 8 {
                mask.resize(cpu / 8 + 1, 0);
            }
            mask[cpu / 8] |= 1 << (cpu % 8);
        }
    }
    Ok(mask)
}

fn bytes_or_max(v: &str) -> Option<u64> {
    if v.trim() == "max" {
        Some(INFINITY)
    } else {
        v.trim().parse().ok()
    }
}

/// The container limits systemd manages, as properties; the rest stays in the files.
pub fn resource_properties(r: &LinuxResources) -> Result<Vec<Property>, String> {
    let mut p = Vec::new();
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares() {
            p.push(("CPUWeight", Value::from(crate::cgroupfs::shares_to_weight(shares as i64))));
        }
        if c.quota().is_some() || c.period().is_some() {
            p.extend(cpu_quota(c.quota().unwrap_or(0), c.period().unwrap_or(0)));
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            p.push(("AllowedCPUs", Value::from(cpu_mask(cpus)?)));
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            p.push(("AllowedMemoryNodes", Value::from(cpu_mask(mems)?)));
        }
    }
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit() {
            let max = if limit > 0 { limit as u64 } else { INFINITY };
            p.push(("MemoryMax", Value::from(max)));
            if let Some(swap) = m.swap() {
                let v = if swap < 0 { INFINITY } else { (swap - limit).max(0) as u64 };
                p.push(("MemorySwapMax", Value::from(v)));
            }
        }
        if let Some(res) = m.reservation().filter(|r| *r > 0) {
            p.push(("MemoryLow", Value::from(res as u64)));
        }
    }
    if let Some(pids) = r.pids() {
        let v = if pids.limit() > 0 { pids.limit() as u64 } else { INFINITY };
        p.push(("TasksMax", Value::from(v)));
    }
    for (key, value) in r.unified().iter().flatten() {
        let name = match key.as_str() {
            "memory.high" => "MemoryHigh",
            "memory.low" => "MemoryLow",
            "memory.min" => "MemoryMin",
            "memory.max" => "MemoryMax",
            "memory.swap.max" => "MemorySwapMax",
            "pids.max" => "TasksMax",
            _ => continue,
        };
        let v = bytes_or_max(value).ok_or_else(|| format!("unified {key}: {value:?}"))?;
        p.retain(|(n, _)| *n != name);
        p.push((name, Value::from(v)));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};

    fn find<'a>(p: &'a [Property], name: &str) -> Option<&'a Value<'static>> {
        p.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    #[test]
    fn cpu_lists_become_masks() {
        assert_eq!(cpu_mask("0").unwrap(), vec![1]);
        assert_eq!(cpu_mask("0-2,9").unwrap(), vec![0b111, 0b10]);
        assert!(cpu_mask("3-1").is_err());
        assert!(cpu_mask("x").is_err());
    }

    #[test]
    fn container_limits_become_properties() {
        let r = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(64 << 20).swap(96 << 20).build().unwrap())
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(25_500i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .unified(std::collections::HashMap::from([(
                "memory.high".to_string(),
                "max".to_string(),
            )]))
            .build()
            .unwrap();
        let p = scope_properties("berth-a.scope", "test.slice", 42, Some(&r)).unwrap();
        assert_eq!(find(&p, "MemoryMax"), Some(&Value::from(64u64 << 20)));
        assert_eq!(find(&p, "MemorySwapMax"), Some(&Value::from(32u64 << 20)));
        assert_eq!(find(&p, "CPUWeight"), Some(&Value::from(39u64)));
        // 25.5 % of a CPU: rounded up to 26 %, 260 ms per second.
        assert_eq!(find(&p, "CPUQuotaPerSecUSec"), Some(&Value::from(260_000u64)));
        assert_eq!(find(&p, "MemoryHigh"), Some(&Value::from(u64::MAX)));
        assert_eq!(find(&p, "PIDs"), Some(&Value::from(vec![42u32])));
        assert_eq!(find(&p, "Delegate"), Some(&Value::from(true)));
    }
}
