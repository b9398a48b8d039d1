//! Addresses on the wire: [`Ip`] (128 bits, IPv4 mapped), CIDRs and MACs.

use crate::Ip;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Converts a std address to the WIT form (IPv4 becomes `::ffff:a.b.c.d`).
pub fn ip_from_std(addr: IpAddr) -> Ip {
    let v6 = match addr {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let bits = u128::from(v6);
    Ip {
        hi: (bits >> 64) as u64,
        lo: bits as u64,
    }
}

/// Converts the WIT form back; IPv4-mapped addresses become IPv4.
pub fn ip_to_std(ip: Ip) -> IpAddr {
    let v6 = Ipv6Addr::from(((ip.hi as u128) << 64) | ip.lo as u128);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

impl Ip {
    /// The absent address.
    pub const NONE: Ip = Ip { hi: 0, lo: 0 };

    pub fn v4(a: u8, b: u8, c: u8, d: u8) -> Ip {
        ip_from_std(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    pub fn bits(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }

    pub fn from_bits(bits: u128) -> Ip {
        Ip {
            hi: (bits >> 64) as u64,
            lo: bits as u64,
        }
    }

    pub fn is_none(self) -> bool {
        self.hi == 0 && self.lo == 0
    }

    pub fn is_v4(self) -> bool {
        self.hi == 0 && (self.lo >> 32) == 0xffff
    }

    /// Adds `n` to the address (used for "the .1 / .2 of a subnet").
    pub fn offset(self, n: u128) -> Ip {
        Ip::from_bits(self.bits().wrapping_add(n))
    }
}

impl Eq for Ip {}

// Hash and order as two u64s: u128 arithmetic is emulated in Wasm and costs calls.
impl std::hash::Hash for Ip {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hi);
        state.write_u64(self.lo);
    }
}

impl PartialOrd for Ip {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ip {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.hi, self.lo).cmp(&(other.hi, other.lo))
    }
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ip_to_std(*self).fmt(f)
    }
}

impl FromStr for Ip {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<IpAddr>()
            .map(ip_from_std)
            .map_err(|e| format!("bad IP address {s:?}: {e}"))
    }
}

/// An IPv4 or IPv6 prefix, stored in the 128-bit mapped space so one type covers both.
/// Network and mask are kept as (hi, lo) halves so `contains` is four 64-bit operations, also
/// inside Wasm (where 128-bit shifts are library calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: u128,
    /// Prefix length in the 128-bit space (IPv4 /24 is 96 + 24).
    len: u8,
    net_hi: u64,
    net_lo: u64,
    mask_hi: u64,
    mask_lo: u64,
}

impl Cidr {
    pub fn new(addr: Ip, prefix_len: u8) -> Cidr {
        let len = if addr.is_v4() {
            96 + prefix_len.min(32)
        } else {
            prefix_len.min(128)
        };
        let mask = Self::mask(len);
        let network = addr.bits() & mask;
        Cidr {
            network,
            len,
            net_hi: (network >> 64) as u64,
            net_lo: network as u64,
            mask_hi: (mask >> 64) as u64,
            mask_lo: mask as u64,
        }
    }

    fn mask(len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            u128::MAX << (128 - len as u32)
        }
    }

    pub fn contains(&self, ip: Ip) -> bool {
        ip.hi & self.mask_hi == self.net_hi && ip.lo & self.mask_lo == self.net_lo
    }

    /// The network address (`10.244.1.0` of `10.244.1.0/24`).
    pub fn network(&self) -> Ip {
        Ip::from_bits(self.network)
    }

    /// The prefix length as written (24 for an IPv4 /24).
    pub fn prefix_len(&self) -> u8 {
        if self.network().is_v4() {
            self.len - 96
        } else {
            self.len
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("bad CIDR {s:?}: no '/'"))?;
        let addr: Ip = addr.parse()?;
        let max = if addr.is_v4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("bad CIDR {s:?}: prefix length"))?;
        Ok(Cidr::new(addr, len))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len())
    }
}

/// A set of prefixes, each carrying a value; lookups return the longest match.
#[derive(Clone, Debug)]
pub struct CidrSet<T> {
    entries: Vec<(Cidr, T)>,
}

impl<T> Default for CidrSet<T> {
    fn default() -> Self {
        CidrSet {
            entries: Vec::new(),
        }
    }
}

impl<T> CidrSet<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, cidr: Cidr, value: T) {
        self.entries.push((cidr, value));
        // Longest prefix first, so the first hit is the longest match.
        self.entries.sort_by_key(|e| std::cmp::Reverse(e.0.len));
    }

    pub fn lookup(&self, ip: Ip) -> Option<(&Cidr, &T)> {
        self.entries
            .iter()
            .find(|(c, _)| c.contains(ip))
            .map(|(c, v)| (c, v))
    }

    pub fn get(&self, ip: Ip) -> Option<&T> {
        self.lookup(ip).map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Cidr, T)> {
        self.entries.iter()
    }
}

/// A 48-bit MAC address, as carried in the batch's MAC columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub u64);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!("bad MAC address {s:?}"));
        }
        let mut v = 0u64;
        for p in parts {
            let b = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC address {s:?}"))?;
            v = (v << 8) | b as u64;
        }
        Ok(Mac(v))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_round_trips_through_the_mapped_form() {
        let ip: Ip = "10.244.1.5".parse().unwrap();
        assert!(ip.is_v4());
        assert_eq!(ip.to_string(), "10.244.1.5");
        let v6: Ip = "fd00::1".parse().unwrap();
        assert!(!v6.is_v4());
        assert_eq!(v6.to_string(), "fd00::1");
    }

    #[test]
    fn cidr_longest_match_wins() {
        let mut set = CidrSet::new();
        set.insert("10.244.0.0/16".parse().unwrap(), "cluster");
        set.insert("10.244.1.0/24".parse().unwrap(), "node-b");
        assert_eq!(set.get("10.244.1.9".parse().unwrap()), Some(&"node-b"));
        assert_eq!(set.get("10.244.7.9".parse().unwrap()), Some(&"cluster"));
        assert_eq!(set.get("10.245.0.1".parse().unwrap()), None);
        let c: Cidr = "10.244.1.77/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        let v6: Cidr = "fd00:10:244:1::/64".parse().unwrap();
        assert!(v6.contains("fd00:10:244:1::5".parse().unwrap()));
        assert!(!v6.contains("10.244.1.5".parse().unwrap()));
    }

    #[test]
    fn mac_parses_and_prints() {
        let m: Mac = "8e:1f:0a:00:00:01".parse().unwrap();
        assert_eq!(m.0, 0x8e1f0a000001);
        assert_eq!(m.to_string(), "8e:1f:0a:00:00:01");
        assert!("8e:1f".parse::<Mac>().is_err());
    }
}
