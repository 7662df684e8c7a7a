//! Getting a blob's bytes for the roles: from the local store when complete, else fetched from
//! the mesh (DHT providers plus hinted peers), within a time limit.

use std::time::Duration;

use libp2p::PeerId;

use crate::{
    hash::Hash32,
    mesh::{Client, blob::FetchOptions},
};

/// Why a blob could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BlobGetError {
    /// The fetch failed or took too long.
    #[error("cannot fetch blob {id}: {reason}")]
    Fetch {
        /// The blob.
        id: Hash32,
        /// Why.
        reason: String,
    },
    /// The blob is larger than the caller accepts.
    #[error("blob {id} has {len} bytes, more than the {limit} accepted")]
    TooLarge {
        /// The blob.
        id: Hash32,
        /// Its length.
        len: usize,
        /// The cap.
        limit: usize,
    },
}

/// The bytes of blob `id`, fetched if needed (at most `limit` bytes, within `timeout`).
pub async fn get_blob(
    mesh: &Client,
    id: Hash32,
    hints: Vec<PeerId>,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<u8>, BlobGetError> {
    let fail = |reason: String| BlobGetError::Fetch { id, reason };
    if let Some(bytes) = read_local(mesh, id).await.map_err(fail)? {
        return check(id, bytes, limit);
    }
    let opts = FetchOptions {
        hints,
        ..FetchOptions::default()
    };
    match tokio::time::timeout(timeout, mesh.fetch_blob(id, opts)).await {
        Ok(Ok(_report)) => {}
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Err(_) => {
            return Err(fail(format!(
                "no complete copy within {} s",
                timeout.as_secs()
            )));
        }
    }
    match read_local(mesh, id).await.map_err(fail)? {
        Some(bytes) => check(id, bytes, limit),
        None => Err(fail("fetched but not readable".into())),
    }
}

async fn read_local(mesh: &Client, id: Hash32) -> Result<Option<Vec<u8>>, String> {
    let blobs = mesh.blobs().clone();
    tokio::task::spawn_blocking(move || blobs.read_all(&id))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

fn check(id: Hash32, bytes: Vec<u8>, limit: usize) -> Result<Vec<u8>, BlobGetError> {
    if bytes.len() > limit {
        return Err(BlobGetError::TooLarge {
            id,
            len: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}
