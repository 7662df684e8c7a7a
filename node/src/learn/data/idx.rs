//! The IDX file format (MNIST's): a big-endian header `[0, 0, dtype, ndim]`, `ndim` u32 dims,
//! then the items. We read and write the u8 flavour (dtype 0x08) only, plain or gzipped
//! (detected by the gzip magic, not the file name). Every size is checked against a cap
//! before anything is allocated, so a hostile or corrupt file fails fast with a typed error.

use std::io::Read;

use flate2::read::GzDecoder;

use super::DataError;

/// IDX type code of unsigned bytes, the only element type MNIST uses.
const IDX_U8: u8 = 0x08;
/// First two bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A decoded IDX array of u8 with its dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first (e.g. `[n, 28, 28]`).
    pub dims: Vec<usize>,
    /// Row-major items.
    pub data: Vec<u8>,
}

/// Decodes IDX bytes (gzipped or plain) holding a u8 array of `expected_ndim` dimensions.
/// `max_bytes` caps the decompressed size (header included).
pub fn decode(bytes: &[u8], expected_ndim: usize, max_bytes: usize) -> Result<IdxArray, DataError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let plain = gunzip(bytes, max_bytes)?;
        decode_plain(&plain, expected_ndim, max_bytes)
    } else {
        decode_plain(bytes, expected_ndim, max_bytes)
    }
}

/// Decompresses a gzip stream, failing once it would exceed `max_bytes`.
fn gunzip(bytes: &[u8], max_bytes: usize) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    // Read one byte past the cap so that "exactly at the cap" and "over it" are told apart.
    let mut limited = GzDecoder::new(bytes).take(max_bytes as u64 + 1);
    limited
        .read_to_end(&mut out)
        .map_err(|e| DataError::Gzip(e.to_string()))?;
    if out.len() > max_bytes {
        return Err(DataError::TooLarge {
            len: out.len(),
            limit: max_bytes,
        });
    }
    Ok(out)
}

fn decode_plain(
    bytes: &[u8],
    expected_ndim: usize,
    max_bytes: usize,
) -> Result<IdxArray, DataError> {
    if bytes.len() > max_bytes {
        return Err(DataError::TooLarge {
            len: bytes.len(),
            limit: max_bytes,
        });
    }
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            expected: 4,
            found: bytes.len(),
        });
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::BadMagic { magic });
    }
    if bytes[2] != IDX_U8 {
        return Err(DataError::UnsupportedType { code: bytes[2] });
    }
    let ndim = usize::from(bytes[3]);
    if ndim != expected_ndim {
        return Err(DataError::WrongDims {
            expected: expected_ndim,
            found: ndim,
        });
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::Truncated {
            expected: header,
            found: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    // Checked product: a header claiming 2^32 x 2^32 items must not overflow into a small size.
    let items = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= max_bytes)
        .ok_or(DataError::TooLarge {
            len: usize::MAX,
            limit: max_bytes,
        })?;
    let expected = header + items;
    if bytes.len() < expected {
        return Err(DataError::Truncated {
            expected,
            found: bytes.len(),
        });
    }
    if bytes.len() > expected {
        return Err(DataError::TrailingBytes {
            extra: bytes.len() - expected,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Encodes a u8 array as plain IDX bytes.
pub fn encode(dims: &[usize], data: &[u8]) -> Result<Vec<u8>, DataError> {
    let items: usize = dims.iter().product();
    if items != data.len() || dims.is_empty() || dims.len() > 255 {
        return Err(DataError::Invalid(format!(
            "cannot encode {} bytes as IDX dims {dims:?}",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, IDX_U8, dims.len() as u8]);
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| DataError::Invalid(format!("IDX dimension {d} exceeds u32")))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::{Compression, write::GzEncoder};

    use super::*;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn encode_decode_round_trip_plain_and_gzip() {
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let bytes = encode(&[2, 3, 4], &data).unwrap();
        let want = IdxArray {
            dims: vec![2, 3, 4],
            data,
        };
        assert_eq!(decode(&bytes, 3, 1 << 20).unwrap(), want);
        assert_eq!(decode(&gz(&bytes), 3, 1 << 20).unwrap(), want);
    }

    #[test]
    fn bad_magic_rejected() {
        let mut bytes = encode(&[1, 2, 2], &[0; 4]).unwrap();
        bytes[0] = 7;
        assert!(matches!(
            decode(&bytes, 3, 1 << 20),
            Err(DataError::BadMagic { magic }) if magic >> 24 == 7
        ));
        bytes[0] = 0;
        bytes[2] = 0x0D; // float32 IDX
        assert!(matches!(
            decode(&bytes, 3, 1 << 20),
            Err(DataError::UnsupportedType { code: 0x0D })
        ));
    }

    #[test]
    fn wrong_dims_rejected() {
        let bytes = encode(&[4], &[0; 4]).unwrap();
        assert!(matches!(
            decode(&bytes, 3, 1 << 20),
            Err(DataError::WrongDims {
                expected: 3,
                found: 1
            })
        ));
    }

    #[test]
    fn truncated_and_trailing_rejected() {
        let bytes = encode(&[2, 2, 2], &[1; 8]).unwrap();
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1], 3, 1 << 20),
            Err(DataError::Truncated {
                expected: 24,
                found: 23
            })
        ));
        assert!(matches!(
            decode(&bytes[..6], 3, 1 << 20),
            Err(DataError::Truncated {
                expected: 16,
                found: 6
            })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            decode(&long, 3, 1 << 20),
            Err(DataError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn huge_header_does_not_allocate() {
        // Claims 2^32-1 x 2^32-1 x 2^32-1 items in a 16-byte file.
        let mut bytes = vec![0, 0, IDX_U8, 3];
        bytes.extend_from_slice(&[0xff; 12]);
        assert!(matches!(
            decode(&bytes, 3, 1 << 20),
            Err(DataError::TooLarge { .. })
        ));
    }

    #[test]
    fn gzip_garbage_and_bombs_rejected() {
        let mut garbage = vec![0x1f, 0x8b, 8, 0];
        garbage.extend_from_slice(&[0x5a; 64]);
        assert!(matches!(
            decode(&garbage, 3, 1 << 20),
            Err(DataError::Gzip(_))
        ));
        // A valid gzip stream that inflates past the cap.
        let bomb = gz(&vec![0u8; 4096]);
        assert!(matches!(
            decode(&bomb, 3, 1024),
            Err(DataError::TooLarge { limit: 1024, .. })
        ));
        // A truncated gzip stream.
        let good = gz(&encode(&[2, 2, 2], &[3; 8]).unwrap());
        assert!(decode(&good[..good.len() - 6], 3, 1 << 20).is_err());
    }
}
