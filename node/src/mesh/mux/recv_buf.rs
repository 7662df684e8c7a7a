//! A stream's received bytes that its reader has not taken yet.

/// Bytes live in `data[start..end]`. The vector keeps its size between uses, so refilling it
/// costs no allocation or zeroing; only a large one is let go once drained.
#[derive(Debug, Default)]
pub(super) struct RecvBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

/// A drained buffer larger than this is freed: an idle stream should not hold megabytes.
const KEEP: usize = 1 << 20;

impl RecvBuf {
    pub(super) fn len(&self) -> usize {
        self.end - self.start
    }

    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Room for `want` more bytes after the held ones; call [`RecvBuf::filled`] with what was
    /// written there.
    pub(super) fn spare(&mut self, want: usize) -> &mut [u8] {
        if self.data.len() - self.end < want {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < want {
                self.data.resize(self.end + want, 0);
            }
        }
        &mut self.data[self.end..self.end + want]
    }

    pub(super) fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Moves up to `out.len()` held bytes into `out`.
    pub(super) fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len());
        out[..n].copy_from_slice(&self.data[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.data.len() > KEEP {
                self.data = Vec::new();
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_refills_and_compaction() {
        let mut b = RecvBuf::default();
        let mut next = 0u8;
        let mut expect = 0u8;
        for round in 0..50usize {
            let want = 1 + round * 37 % 500;
            let spare = b.spare(want);
            for x in spare.iter_mut() {
                *x = next;
                next = next.wrapping_add(1);
            }
            b.filled(want);
            let mut out = vec![0u8; 1 + round * 53 % 400];
            let n = b.take(&mut out);
            for &x in &out[..n] {
                assert_eq!(x, expect);
                expect = expect.wrapping_add(1);
            }
        }
        let mut rest = vec![0u8; b.len()];
        assert_eq!(b.take(&mut rest), rest.len());
        assert!(rest.iter().all(|&x| {
            let ok = x == expect;
            expect = expect.wrapping_add(1);
            ok
        }));
        assert!(b.is_empty());
    }

    #[test]
    fn a_large_buffer_is_freed_once_drained() {
        let mut b = RecvBuf::default();
        b.spare(2 * KEEP);
        b.filled(2 * KEEP);
        let mut out = vec![0u8; 2 * KEEP];
        assert_eq!(b.take(&mut out), 2 * KEEP);
        assert_eq!(b.data.capacity(), 0);
    }
}
