//! Test helpers of the learn area: the committed real MNIST subset (first 10,000 training and
//! first 2,000 test images of the canonical files, gzipped IDX under `node/testdata/mnist/`)
//! and the full set fetched by `scripts/fetch-mnist.sh` for heavier tests and benchmarks.

use std::path::PathBuf;

use crate::learn::{Dataset, Split};

/// Directory of the committed MNIST subset.
pub fn mnist_subset_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/mnist")
}

/// The committed subset: (10,000 training images, 2,000 test images). Panics with a clear
/// message if the files are missing (they are committed, so that is a broken checkout).
pub fn load_subset() -> (Dataset, Dataset) {
    let dir = mnist_subset_dir();
    let load = |split| {
        Dataset::load_dir(&dir, split).unwrap_or_else(|e| {
            panic!(
                "committed MNIST subset unreadable in {}: {e}",
                dir.display()
            )
        })
    };
    (load(Split::Train), load(Split::Test))
}

/// Directory of the full MNIST set: `$QUACKMESH_MNIST_DIR` or `<repo>/data/mnist`, if it holds
/// the files (run `scripts/fetch-mnist.sh` to create it).
pub fn full_mnist_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("QUACKMESH_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mnist"));
    Dataset::load_dir(&dir, Split::Test).is_ok().then_some(dir)
}

/// The full MNIST set (60,000 training, 10,000 test images), if fetched.
pub fn load_full() -> Option<(Dataset, Dataset)> {
    let dir = full_mnist_dir()?;
    Some((
        Dataset::load_dir(&dir, Split::Train).ok()?,
        Dataset::load_dir(&dir, Split::Test).ok()?,
    ))
}
