//! A pod's systemd slice (systemd cgroup driver): its unit, started with the pod's
//! limits when the kubelet did not make it, resized in place, and stopped.

use zbus::zvariant::Value;

use super::pod_spec::Resources;
use crate::cgroupfs::shares_to_weight;
use crate::systemd::{accounting, cpu_quota, Property};

/// The unit of a pod slice (systemd driver): the last part of its directory.
pub fn slice_unit(rel: &str) -> Option<&str> {
    rel.rsplit('/').next().filter(|u| u.ends_with(".slice"))
}

/// Whether the pod slice's unit is running (the kubelet, another pod or berth made it).
pub fn slice_active(unit: &str) -> Result<bool, String> {
    crate::systemd::with_shared(|bus| Ok(bus.active_state(unit)?.as_deref() == Some("active")))
}

/// Starts a pod slice with the pod's limits (the kubelet did not make it).
pub fn start_slice(unit: &str, r: Option<&Resources>) -> Result<(), String> {
    let props = pod_properties(unit, r);
    crate::systemd::with_shared(|bus| bus.start_transient(unit, props))
}

/// Pod-level limits on a running pod slice, through systemd so that it keeps them.
pub fn set_slice_limits(unit: &str, r: &Resources) -> Result<(), String> {
    let props = pod_limits(r);
    if props.is_empty() {
        return Ok(());
    }
    crate::systemd::with_shared(|bus| bus.set_properties(unit, props))
}

/// Stops a pod slice berth started (systemd removes its cgroup).
pub fn stop_slice(unit: &str) -> Result<(), String> {
    crate::systemd::with_shared(|bus| bus.stop(unit))
}

/// A pod slice berth starts: its pod-level limits, accounting on so that its containers'
/// scopes get every controller.
pub fn pod_properties(unit: &str, r: Option<&Resources>) -> Vec<Property> {
    let mut p = vec![
        ("Description", Value::from(format!("berth pod {unit}"))),
        ("DefaultDependencies", Value::from(false)),
    ];
    p.extend(accounting());
    if let Some(r) = r {
        p.extend(pod_limits(r));
    }
    p
}

/// Pod-level limits alone (for SetUnitProperties on a running pod).
pub fn pod_limits(r: &Resources) -> Vec<Property> {
    let mut p = Vec::new();
    if r.cpu_shares > 0 {
        p.push(("CPUWeight", Value::from(shares_to_weight(r.cpu_shares))));
    }
    if r.cpu_quota != 0 || r.cpu_period != 0 {
        p.extend(cpu_quota(r.cpu_quota, r.cpu_period.max(0) as u64));
    }
    if r.memory_limit > 0 {
        p.push(("MemoryMax", Value::from(r.memory_limit as u64)));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(p: &'a [Property], name: &str) -> Option<&'a Value<'static>> {
        p.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    #[test]
    fn pod_limits_become_properties() {
        let r = Resources { cpu_period: 0, cpu_quota: 0, cpu_shares: 0, memory_limit: 1 << 30 };
        let p = pod_properties("test.slice", Some(&r));
        assert_eq!(find(&p, "MemoryMax"), Some(&Value::from(1u64 << 30)));
        assert!(find(&p, "CPUQuotaPerSecUSec").is_none());
    }
}
