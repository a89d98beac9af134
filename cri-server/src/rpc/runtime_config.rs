//! RuntimeConfig (what the kubelet should assume about us) and UpdateRuntimeConfig (what
//! the kubelet tells us).

use super::Cri;
use crate::config::CgroupDriver;
use berth_proto::{
    LinuxRuntimeConfiguration, RuntimeConfigResponse, UpdateRuntimeConfigRequest,
    UpdateRuntimeConfigResponse,
};

pub fn runtime_config(cri: &Cri) -> RuntimeConfigResponse {
    let driver = match cri.inner.config.cgroup.driver {
        CgroupDriver::Cgroupfs => berth_proto::CgroupDriver::Cgroupfs,
        CgroupDriver::Systemd => berth_proto::CgroupDriver::Systemd,
    };
    RuntimeConfigResponse {
        linux: Some(LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }),
    }
}

pub fn update_runtime_config(
    cri: &Cri,
    req: UpdateRuntimeConfigRequest,
) -> Result<UpdateRuntimeConfigResponse, tonic::Status> {
    // The kubelet sends this with an empty config on start; only a CIDR is meaningful.
    let Some(cidr) = req.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr) else {
        return Ok(UpdateRuntimeConfigResponse {});
    };
    if !cidr.is_empty() {
        for part in cidr.split(',') {
            validate_cidr(part.trim()).map_err(|why| {
                tonic::Status::invalid_argument(format!(
                    "runtime_config.network_config.pod_cidr: {part:?} {why}"
                ))
            })?;
        }
    }
    let mut stored = cri.inner.pod_cidr.lock().unwrap_or_else(|p| p.into_inner());
    if *stored != cidr {
        tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
        cri.inner.sandboxes.set_pod_cidr(&cidr);
        *stored = cidr;
    }
    Ok(UpdateRuntimeConfigResponse {})
}

/// Accepts `ADDR/PREFIX` with an IPv4 or IPv6 address and a prefix the family allows.
fn validate_cidr(cidr: &str) -> Result<(), &'static str> {
    let (addr, prefix) = cidr.split_once('/').ok_or("is not in ADDRESS/PREFIX form")?;
    let addr: std::net::IpAddr = addr.parse().map_err(|_| "has an invalid address")?;
    let prefix: u8 = prefix.parse().map_err(|_| "has an invalid prefix length")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err("has a prefix length too long for its address family");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_cidr;

    #[test]
    fn cidrs() {
        assert!(validate_cidr("10.244.0.0/24").is_ok());
        assert!(validate_cidr("fd00::/64").is_ok());
        assert!(validate_cidr("10.244.0.0").is_err());
        assert!(validate_cidr("10.244.0.0/33").is_err());
        assert!(validate_cidr("nonsense/8").is_err());
    }
}
