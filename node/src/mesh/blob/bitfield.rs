//! A fixed-length bitfield: which chunks of a blob a peer holds. Sent on the wire (CBOR byte
//! string), so a received one is checked against the manifest's chunk count before use.

use serde::{Deserialize, Serialize};

/// One bit per chunk; bit `i` is byte `i / 8`, mask `1 << (i % 8)`. Padding bits are zero.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bitfield {
    len: u32,
    #[serde(with = "serde_bytes")]
    bits: Vec<u8>,
}

impl Bitfield {
    /// All bits clear.
    pub fn empty(len: u32) -> Self {
        Self {
            len,
            bits: vec![0; (len as usize).div_ceil(8)],
        }
    }

    /// All bits set.
    pub fn full(len: u32) -> Self {
        let mut b = Self::empty(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Number of bits.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the field has no bits at all (a zero-chunk blob).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bit `i` (false when out of range).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Sets bit `i`; returns whether it was clear. Out-of-range indices are ignored.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let byte = &mut self.bits[(i / 8) as usize];
        let was_clear = *byte & (1 << (i % 8)) == 0;
        *byte |= 1 << (i % 8);
        was_clear
    }

    /// Number of set bits.
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// Whether every bit is set.
    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }

    /// Indices of set bits, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// Whether a received bitfield is well-formed for a blob of `chunks` chunks: right length,
    /// right byte count, zero padding.
    pub fn is_valid_for(&self, chunks: u32) -> bool {
        if self.len != chunks || self.bits.len() != (chunks as usize).div_ceil(8) {
            return false;
        }
        match self.bits.last() {
            Some(last) if !chunks.is_multiple_of(8) => last >> (chunks % 8) == 0,
            _ => true,
        }
    }
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count() {
        let mut b = Bitfield::empty(10);
        assert!(b.set(3));
        assert!(!b.set(3));
        assert!(b.set(9));
        assert!(!b.set(10));
        assert!(b.get(3) && b.get(9) && !b.get(0) && !b.get(10));
        assert_eq!(b.count(), 2);
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![3, 9]);
        assert!(!b.is_full());
        assert!(Bitfield::full(10).is_full());
        assert!(Bitfield::full(0).is_full());
    }

    #[test]
    fn validity_checks_length_and_padding() {
        assert!(Bitfield::full(10).is_valid_for(10));
        assert!(!Bitfield::full(10).is_valid_for(11));
        let bad_padding = Bitfield {
            len: 10,
            bits: vec![0xff, 0xff],
        };
        assert!(!bad_padding.is_valid_for(10));
        let short = Bitfield {
            len: 10,
            bits: vec![0xff],
        };
        assert!(!short.is_valid_for(10));
        assert!(Bitfield::full(16).is_valid_for(16));
    }

    #[test]
    fn cbor_is_compact() {
        let b = Bitfield::full(1000);
        let bytes = crate::cbor::to_vec(&b).unwrap();
        assert!(bytes.len() < 125 + 24, "{} bytes", bytes.len());
        assert_eq!(crate::cbor::from_slice::<Bitfield>(&bytes, 200).unwrap(), b);
    }
}
