//! IPv4 address management over one subnet: pure, in memory, deterministic.
//!
//! The allocator does not persist anything. The runtime keeps leases in its metadata
//! store and rebuilds an [`Ipam`] from them with [`Ipam::from_leases`] (optionally with
//! [`Ipam::with_cursor`] to restore the next-fit position), so that every decision here
//! depends only on the subnet, the leases and the cursor.
//!
//! Address plan for a subnet such as `10.88.0.0/16`:
//! * the network address (`10.88.0.0`) and the broadcast address (`10.88.255.255`) are
//!   never handed out;
//! * the first host address (`10.88.0.1`) is the gateway (the bridge's address) and is
//!   never handed out;
//! * every other host address may be leased to exactly one owner.
//!
//! Allocation is next-fit: the search starts just after the most recently allocated
//! address and wraps around, so an address that was just released is the last one to be
//! handed out again (a late packet or a stale conntrack entry for a dead pod does not hit
//! its successor).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Errors from the allocator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The subnet has no room for a gateway plus at least one pod (prefix /31 or /32).
    #[error("subnet {0} is too small: it needs room for a gateway and at least one pod")]
    SubnetTooSmall(Ipv4Net),
    /// Every usable address of the subnet is leased.
    #[error("no free IPv4 address left in {subnet} ({leased} leased)")]
    Exhausted { subnet: Ipv4Net, leased: usize },
    /// A lease given to [`Ipam::from_leases`] is outside the usable range.
    #[error("lease {ip} of {owner:?} is not a usable pod address of {subnet}")]
    OutOfRange { owner: String, ip: Ipv4Addr, subnet: Ipv4Net },
    /// Two leases given to [`Ipam::from_leases`] share one address.
    #[error("address {ip} is leased twice, to {first:?} and {second:?}")]
    DuplicateAddress { ip: Ipv4Addr, first: String, second: String },
    /// One owner holds two leases in what was given to [`Ipam::from_leases`].
    #[error("owner {owner:?} holds two leases, {first} and {second}")]
    DuplicateOwner { owner: String, first: Ipv4Addr, second: Ipv4Addr },
    /// An owner id is empty.
    #[error("lease owner id must not be empty")]
    EmptyOwner,
}

/// An IPv4 allocator over one subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipam {
    subnet: Ipv4Net,
    /// First and last address that may be leased, as integers.
    first: u32,
    last: u32,
    by_ip: BTreeMap<u32, String>,
    by_owner: HashMap<String, u32>,
    /// The most recently allocated address; the next search starts after it.
    cursor: u32,
}

impl Ipam {
    /// An allocator with no leases. The host bits of `subnet` are ignored
    /// (`10.88.3.4/16` means `10.88.0.0/16`).
    pub fn new(subnet: Ipv4Net) -> Result<Self, IpamError> {
        let subnet = subnet.trunc();
        if subnet.prefix_len() > 30 {
            return Err(IpamError::SubnetTooSmall(subnet));
        }
        let network = u32::from(subnet.network());
        let broadcast = u32::from(subnet.broadcast());
        // network + 1 is the gateway.
        let first = network + 2;
        let last = broadcast - 1;
        Ok(Ipam {
            subnet,
            first,
            last,
            by_ip: BTreeMap::new(),
            by_owner: HashMap::new(),
            // So that the first allocation of a fresh allocator is `first`.
            cursor: last,
        })
    }

    /// An allocator that already holds `leases` (owner id, address), e.g. as read back from
    /// the metadata store. Every lease must be a usable address of the subnet, and no address
    /// or owner may appear twice. The next-fit cursor is put on the highest leased address
    /// (or the start when there are none); use [`Ipam::with_cursor`] to restore a persisted
    /// one instead.
    pub fn from_leases<I, S>(subnet: Ipv4Net, leases: I) -> Result<Self, IpamError>
    where
        I: IntoIterator<Item = (S, Ipv4Addr)>,
        S: Into<String>,
    {
        let mut ipam = Ipam::new(subnet)?;
        for (owner, ip) in leases {
            let owner = owner.into();
            if owner.is_empty() {
                return Err(IpamError::EmptyOwner);
            }
            let n = u32::from(ip);
            if n < ipam.first || n > ipam.last {
                return Err(IpamError::OutOfRange { owner, ip, subnet: ipam.subnet });
            }
            if let Some(first) = ipam.by_ip.get(&n) {
                return Err(IpamError::DuplicateAddress {
                    ip,
                    first: first.clone(),
                    second: owner,
                });
            }
            if let Some(&first) = ipam.by_owner.get(&owner) {
                return Err(IpamError::DuplicateOwner {
                    owner,
                    first: Ipv4Addr::from(first),
                    second: ip,
                });
            }
            ipam.by_ip.insert(n, owner.clone());
            ipam.by_owner.insert(owner, n);
        }
        if let Some((&highest, _)) = ipam.by_ip.last_key_value() {
            ipam.cursor = highest;
        }
        Ok(ipam)
    }

    /// Sets the next-fit cursor: the next allocation searches from the address after `last`.
    /// An address outside the usable range resets the cursor to the start.
    pub fn with_cursor(mut self, last_allocated: Ipv4Addr) -> Self {
        let n = u32::from(last_allocated);
        self.cursor = if n >= self.first && n <= self.last { n } else { self.last };
        self
    }

    /// The subnet (host bits cleared).
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The gateway: the first host address of the subnet, the bridge's own address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    /// The prefix length of the subnet.
    pub fn prefix_len(&self) -> u8 {
        self.subnet.prefix_len()
    }

    /// The most recently allocated address (where the next search starts after), for the
    /// runtime to persist next to the leases if it wants rotation to survive restarts.
    pub fn cursor(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.cursor)
    }

    /// How many addresses can be leased in total (excluding network, gateway, broadcast).
    pub fn capacity(&self) -> usize {
        (self.last - self.first + 1) as usize
    }

    /// Leases an address to `owner`. An owner that already holds a lease gets the same
    /// address again (so a retried request does not leak one).
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        if owner.is_empty() {
            return Err(IpamError::EmptyOwner);
        }
        if let Some(&n) = self.by_owner.get(owner) {
            return Ok(Ipv4Addr::from(n));
        }
        if self.by_ip.len() >= self.capacity() {
            return Err(IpamError::Exhausted { subnet: self.subnet, leased: self.by_ip.len() });
        }
        let n = self
            .next_free()
            .ok_or(IpamError::Exhausted { subnet: self.subnet, leased: self.by_ip.len() })?;
        self.by_ip.insert(n, owner.to_string());
        self.by_owner.insert(owner.to_string(), n);
        self.cursor = n;
        Ok(Ipv4Addr::from(n))
    }

    /// First free address after the cursor, wrapping around. Walks the leased addresses in
    /// order, so the cost is bounded by the number of leases, not the subnet size.
    fn next_free(&self) -> Option<u32> {
        let start = if self.cursor >= self.last { self.first } else { self.cursor + 1 };
        let scan = |from: u32, to: u32| -> Option<u32> {
            let mut candidate = from;
            for (&leased, _) in self.by_ip.range(from..=to) {
                if leased != candidate {
                    return Some(candidate);
                }
                if candidate == to {
                    return None;
                }
                candidate += 1;
            }
            (candidate <= to).then_some(candidate)
        };
        scan(start, self.last).or_else(|| {
            if start > self.first {
                scan(self.first, start - 1)
            } else {
                None
            }
        })
    }

    /// Releases the lease of `owner`, returning the address it held. Releasing an owner
    /// without a lease is not an error (returns `None`).
    pub fn release(&mut self, owner: &str) -> Option<Ipv4Addr> {
        let n = self.by_owner.remove(owner)?;
        self.by_ip.remove(&n);
        Some(Ipv4Addr::from(n))
    }

    /// The address leased to `owner`, if any.
    pub fn lease_of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.by_owner.get(owner).map(|&n| Ipv4Addr::from(n))
    }

    /// All leases as (owner, address), ordered by address.
    pub fn leases(&self) -> Vec<(String, Ipv4Addr)> {
        self.by_ip.iter().map(|(&n, owner)| (owner.clone(), Ipv4Addr::from(n))).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn address_plan_per_subnet() {
        // subnet, gateway, first allocation, capacity
        let cases = [
            ("10.88.0.0/16", "10.88.0.1", "10.88.0.2", 65533),
            ("10.88.7.9/16", "10.88.0.1", "10.88.0.2", 65533),
            ("10.250.3.0/24", "10.250.3.1", "10.250.3.2", 253),
            ("192.168.5.4/30", "192.168.5.5", "192.168.5.6", 1),
            ("172.16.0.0/29", "172.16.0.1", "172.16.0.2", 5),
        ];
        for (subnet, gw, first, cap) in cases {
            let mut ipam = Ipam::new(net(subnet)).unwrap();
            assert_eq!(ipam.gateway(), ip(gw), "{subnet}");
            assert_eq!(ipam.capacity(), cap, "{subnet}");
            assert_eq!(ipam.allocate("a").unwrap(), ip(first), "{subnet}");
        }
    }

    #[test]
    fn too_small_subnets_are_rejected() {
        for s in ["10.0.0.0/31", "10.0.0.1/32"] {
            assert!(matches!(Ipam::new(net(s)), Err(IpamError::SubnetTooSmall(_))));
        }
    }

    #[test]
    fn slash_30_has_one_address_then_is_exhausted() {
        let mut ipam = Ipam::new(net("10.0.0.0/30")).unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), ip("10.0.0.2"));
        let err = ipam.allocate("b").unwrap_err();
        assert_eq!(err, IpamError::Exhausted { subnet: net("10.0.0.0/30"), leased: 1 });
        assert!(err.to_string().contains("no free IPv4 address left in 10.0.0.0/30"));
        // Releasing makes room again, and the only address comes back.
        assert_eq!(ipam.release("a"), Some(ip("10.0.0.2")));
        assert_eq!(ipam.allocate("b").unwrap(), ip("10.0.0.2"));
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast() {
        let mut ipam = Ipam::new(net("10.1.2.0/28")).unwrap();
        let mut got = HashSet::new();
        for i in 0..ipam.capacity() {
            got.insert(ipam.allocate(&format!("p{i}")).unwrap());
        }
        assert!(ipam.allocate("one-too-many").is_err());
        for forbidden in ["10.1.2.0", "10.1.2.1", "10.1.2.15"] {
            assert!(!got.contains(&ip(forbidden)), "{forbidden} was handed out");
        }
        assert_eq!(got.len(), 13);
    }

    #[test]
    fn allocation_is_idempotent_per_owner() {
        let mut ipam = Ipam::new(net("10.0.0.0/24")).unwrap();
        let a = ipam.allocate("a").unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), a);
        assert_eq!(ipam.leases(), vec![("a".to_string(), a)]);
        assert_eq!(ipam.lease_of("a"), Some(a));
    }

    #[test]
    fn release_is_idempotent() {
        let mut ipam = Ipam::new(net("10.0.0.0/24")).unwrap();
        ipam.allocate("a").unwrap();
        assert!(ipam.release("a").is_some());
        assert_eq!(ipam.release("a"), None);
        assert_eq!(ipam.release("never"), None);
        assert!(ipam.leases().is_empty());
    }

    #[test]
    fn rotation_does_not_reuse_a_just_released_address() {
        let mut ipam = Ipam::new(net("10.0.0.0/24")).unwrap();
        let a = ipam.allocate("a").unwrap();
        ipam.release("a");
        let b = ipam.allocate("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(b, ip("10.0.0.3"));
    }

    #[test]
    fn next_fit_wraps_around_and_skips_leases() {
        let mut ipam = Ipam::new(net("10.0.0.0/29")).unwrap(); // .2 ..= .6
        let names = ["a", "b", "c", "d", "e"];
        for n in names {
            ipam.allocate(n).unwrap();
        }
        ipam.release("b"); // .3
        ipam.release("d"); // .5
                           // Cursor is at .6: wrap to .2 (leased), .3 is free.
        assert_eq!(ipam.allocate("f").unwrap(), ip("10.0.0.3"));
        assert_eq!(ipam.allocate("g").unwrap(), ip("10.0.0.5"));
        assert!(ipam.allocate("h").is_err());
    }

    #[test]
    fn from_leases_table() {
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            Result<&'static str, &'static str>,
        );
        // subnet, leases, Ok(next allocation) or Err(substring of the error)
        let cases: &[Case] = &[
            ("10.0.0.0/24", &[], Ok("10.0.0.2")),
            ("10.0.0.0/24", &[("a", "10.0.0.2"), ("b", "10.0.0.9")], Ok("10.0.0.10")),
            ("10.0.0.0/24", &[("a", "10.0.0.254")], Ok("10.0.0.2")),
            ("10.0.0.0/24", &[("a", "10.0.0.0")], Err("not a usable pod address")),
            ("10.0.0.0/24", &[("a", "10.0.0.1")], Err("not a usable pod address")),
            ("10.0.0.0/24", &[("a", "10.0.0.255")], Err("not a usable pod address")),
            ("10.0.0.0/24", &[("a", "10.0.1.5")], Err("not a usable pod address")),
            ("10.0.0.0/24", &[("a", "10.0.0.5"), ("b", "10.0.0.5")], Err("leased twice")),
            ("10.0.0.0/24", &[("a", "10.0.0.5"), ("a", "10.0.0.6")], Err("holds two leases")),
            ("10.0.0.0/24", &[("", "10.0.0.5")], Err("must not be empty")),
            ("10.0.0.0/30", &[("a", "10.0.0.2")], Err("no free IPv4 address")),
        ];
        for (subnet, leases, want) in cases {
            let got = Ipam::from_leases(net(subnet), leases.iter().map(|&(o, a)| (o, ip(a))))
                .and_then(|mut ipam| ipam.allocate("new"));
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, ip(want), "{subnet} {leases:?}"),
                (Err(e), Err(want)) => {
                    assert!(e.to_string().contains(want), "{subnet} {leases:?}: {e}")
                }
                (got, want) => panic!("{subnet} {leases:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn from_leases_is_deterministic_and_round_trips() {
        let mut a = Ipam::new(net("10.9.0.0/24")).unwrap();
        for i in 0..20 {
            a.allocate(&format!("p{i}")).unwrap();
        }
        for i in (0..20).step_by(3) {
            a.release(&format!("p{i}"));
        }
        let leases = a.leases();
        let mut reversed = leases.clone();
        reversed.reverse();
        let b =
            Ipam::from_leases(net("10.9.0.0/24"), leases.clone()).unwrap().with_cursor(a.cursor());
        let c = Ipam::from_leases(net("10.9.0.0/24"), reversed).unwrap().with_cursor(a.cursor());
        assert_eq!(b, c);
        assert_eq!(b.leases(), leases);
        let (mut a, mut b) = (a, b);
        for i in 0..10 {
            let owner = format!("q{i}");
            assert_eq!(a.allocate(&owner).unwrap(), b.allocate(&owner).unwrap());
        }
    }

    #[test]
    fn thousand_alloc_release_cycles_never_duplicate() {
        let mut ipam = Ipam::new(net("10.77.0.0/26")).unwrap(); // 61 usable
        let mut live: Vec<String> = Vec::new();
        let mut seed: u32 = 0x1234_5678;
        let mut rand = move || {
            // xorshift32: deterministic, good enough to shuffle releases.
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let first = u32::from(ipam.gateway()) + 1;
        let last = u32::from(ipam.subnet().broadcast()) - 1;
        for i in 0..1000 {
            // Reference next-fit: the first free address after the cursor, wrapping.
            let leased: HashSet<u32> = ipam.leases().iter().map(|(_, a)| u32::from(*a)).collect();
            let cursor = u32::from(ipam.cursor());
            let expected = (1..=ipam.capacity() as u32)
                .map(|k| first + (cursor - first + k) % (last - first + 1))
                .find(|n| !leased.contains(n))
                .map(Ipv4Addr::from);
            // Keep the pool around 40 leases, releasing a random one each cycle.
            let owner = format!("pod-{i}");
            let got = ipam.allocate(&owner).unwrap();
            assert_eq!(Some(got), expected, "cycle {i} is not next-fit");
            live.push(owner);
            if live.len() > 40 {
                let victim = live.swap_remove(rand() as usize % live.len());
                assert!(ipam.release(&victim).is_some());
            }
            let leases = ipam.leases();
            let unique: HashSet<_> = leases.iter().map(|(_, a)| *a).collect();
            assert_eq!(unique.len(), leases.len(), "duplicate address at cycle {i}");
            assert_eq!(leases.len(), live.len());
            for (_, a) in &leases {
                let n = u32::from(*a);
                assert!(n > u32::from(ipam.gateway()) && n < u32::from(ipam.subnet().broadcast()));
            }
        }
    }
}
