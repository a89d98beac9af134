//! berth-network's [`IpAllocator`] over the metadata store: every allocation and release
//! is one transaction that reads the leases, decides with the pure [`Ipam`] and writes the
//! change back, so leases survive restarts and two pods never share an address.

use std::net::Ipv4Addr;
use std::sync::Arc;

use berth_network::{IpAllocator, Ipam, NetworkError};
use ipnet::Ipv4Net;

use super::record::{CursorRecord, LeaseRecord};
use crate::metadata::{MetadataError, MetadataStore};

pub struct StoredIpam {
    meta: Arc<MetadataStore>,
    subnet: Ipv4Net,
}

impl StoredIpam {
    pub fn new(meta: Arc<MetadataStore>, subnet: Ipv4Net) -> Self {
        StoredIpam { meta, subnet: subnet.trunc() }
    }

    /// Pod ids holding a lease (of any subnet).
    pub fn holders(&self) -> Result<Vec<String>, MetadataError> {
        Ok(self.meta.list::<LeaseRecord>()?.into_iter().map(|(k, _)| k).collect())
    }
}

fn db(e: MetadataError) -> NetworkError {
    NetworkError::Io {
        context: "IP lease store".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl IpAllocator for StoredIpam {
    fn allocate(&self, pod_id: &str) -> berth_network::Result<Ipv4Addr> {
        let subnet = self.subnet.to_string();
        let mut tx = self.meta.write().map_err(db)?;
        let leases = tx.list::<LeaseRecord>().map_err(db)?;
        if let Some((_, l)) = leases.iter().find(|(k, l)| k == pod_id && l.subnet == subnet) {
            return Ok(l.ip);
        }
        let ours = leases.into_iter().filter(|(_, l)| l.subnet == subnet).map(|(k, l)| (k, l.ip));
        let mut ipam = Ipam::from_leases(self.subnet, ours)?;
        if let Some(c) = tx.get::<CursorRecord>(&subnet).map_err(db)? {
            ipam = ipam.with_cursor(c.last);
        }
        let ip = ipam.allocate(pod_id)?;
        tx.put(pod_id, &LeaseRecord { ip, subnet: subnet.clone() }).map_err(db)?;
        tx.put(&subnet, &CursorRecord { last: ip }).map_err(db)?;
        // Not synced to disk: readers (the next allocation) see it at once, and the pod's
        // READY record, synced, makes it durable with its own. A crash before that loses
        // the lease of a pod that never became READY, which start-up removes anyway.
        tx.commit_unsynced().map_err(db)?;
        Ok(ip)
    }

    /// Not synced to disk: a release is only ever of a pod that is not READY (recorded
    /// NOTREADY, or whose set-up failed, or being removed), and start-up releases every
    /// lease whose pod is not READY, so a release a crash loses is made again there. (The stop that releases has already
    /// waited for one sync, its NOTREADY record's.)
    fn release(&self, pod_id: &str) -> berth_network::Result<()> {
        let mut tx = self.meta.write().map_err(db)?;
        if tx.delete::<LeaseRecord>(pod_id).map_err(db)? {
            tx.commit_unsynced().map_err(db)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_persist_and_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        let subnet: Ipv4Net = "10.9.0.0/29".parse().unwrap(); // .2 ..= .6
        let (a, b) = {
            let ipam = StoredIpam::new(Arc::new(MetadataStore::open(&path).unwrap()), subnet);
            let a = ipam.allocate("a").unwrap();
            assert_eq!(ipam.allocate("a").unwrap(), a, "idempotent per pod");
            (a, ipam.allocate("b").unwrap())
        };
        assert_ne!(a, b);
        let ipam = StoredIpam::new(Arc::new(MetadataStore::open(&path).unwrap()), subnet);
        assert_eq!(ipam.allocate("a").unwrap(), a, "lease survived the reopen");
        let c = ipam.allocate("c").unwrap();
        assert!(c != a && c != b);
        ipam.release("b").unwrap();
        ipam.release("b").unwrap();
        // Next-fit continues after c rather than reusing b at once.
        let d = ipam.allocate("d").unwrap();
        assert_ne!(d, b);
        for p in ["e", "f"] {
            ipam.allocate(p).unwrap();
        }
        let err = ipam.allocate("g").unwrap_err();
        assert!(err.to_string().contains("no free IPv4 address"), "{err}");
        let mut holders = ipam.holders().unwrap();
        holders.sort();
        assert_eq!(holders, ["a", "c", "d", "e", "f"]);
    }
}
