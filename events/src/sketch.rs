//! [`Sketch`]: the HyperLogLog of distinct client IPs a node's load report carries
//! (`NodeLoadReported.client_ip_sketch`), so the collector can count the distinct
//! clients of the whole ring: the union of the nodes' sketches, which the sum of
//! their counts is not (a client that reaches two nodes counts twice).
//!
//! 4,096 registers of one byte (precision 12): a standard error of 1.04/sqrt(4096),
//! about 1.6 %. The wire form is the registers themselves, 4,096 bytes; anything else
//! is refused. An address is hashed with xxh3-64 of its octets (4 for IPv4, 16 for
//! IPv6): the same hash on every node, so sketches merge.

use std::net::IpAddr;

/// Bits of the hash that pick a register.
pub const PRECISION: u32 = 12;
/// Registers (and bytes on the wire).
pub const REGISTERS: usize = 1 << PRECISION;

/// A HyperLogLog sketch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sketch {
    registers: Box<[u8; REGISTERS]>,
}

impl Default for Sketch {
    fn default() -> Self {
        Self {
            registers: Box::new([0; REGISTERS]),
        }
    }
}

/// Why bytes are not a sketch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a client-IP sketch is {REGISTERS} bytes, not {0}")]
pub struct SketchError(pub usize);

impl Sketch {
    /// Adds an address.
    pub fn add(&mut self, ip: IpAddr) {
        let hash = match ip {
            IpAddr::V4(v4) => xxhash_rust::xxh3::xxh3_64(&v4.octets()),
            IpAddr::V6(v6) => xxhash_rust::xxh3::xxh3_64(&v6.octets()),
        };
        let index = (hash >> (64 - PRECISION)) as usize;
        let rest = hash << PRECISION;
        // The position of the first 1 bit in what is left, counted from 1.
        let rank = (rest.leading_zeros() + 1).min(64 - PRECISION + 1) as u8;
        if let Some(register) = self.registers.get_mut(index) {
            *register = (*register).max(rank);
        }
    }

    /// Takes in another sketch (the union of the two sets).
    pub fn merge(&mut self, other: &Sketch) {
        for (mine, theirs) in self.registers.iter_mut().zip(other.registers.iter()) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// The estimated number of distinct addresses added (with the small-range
    /// correction: linear counting while many registers are empty).
    pub fn estimate(&self) -> u64 {
        let m = REGISTERS as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let sum: f64 = self
            .registers
            .iter()
            .map(|r| 2f64.powi(-i32::from(*r)))
            .sum();
        let raw = alpha * m * m / sum;
        let zeros = self.registers.iter().filter(|r| **r == 0).count();
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }

    /// The wire form: the registers.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.registers.to_vec()
    }

    /// A sketch from its wire form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, SketchError> {
        let registers: [u8; REGISTERS] = bytes.try_into().map_err(|_| SketchError(bytes.len()))?;
        Ok(Sketch {
            registers: Box::new(registers),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | i))
    }

    #[test]
    fn estimates_are_within_four_standard_errors() {
        for n in [1u32, 7, 100, 5_000, 50_000] {
            let mut s = Sketch::default();
            for i in 0..n {
                s.add(ip(i));
                s.add(ip(i));
            }
            let error = (s.estimate() as f64 - f64::from(n)).abs() / f64::from(n);
            assert!(error < 0.065, "{n}: {}", s.estimate());
        }
        assert_eq!(Sketch::default().estimate(), 0);
    }

    #[test]
    fn the_union_counts_a_shared_address_once_and_round_trips() {
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        for i in 0..300 {
            a.add(ip(i));
        }
        for i in 200..500 {
            b.add(ip(i));
        }
        let b = Sketch::from_bytes(&b.to_bytes()).unwrap();
        a.merge(&b);
        let error = (a.estimate() as f64 - 500.0).abs() / 500.0;
        assert!(error < 0.065, "{}", a.estimate());
        assert_eq!(Sketch::from_bytes(&[0; 10]), Err(SketchError(10)));
    }
}
