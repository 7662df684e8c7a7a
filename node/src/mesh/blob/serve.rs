//! Answering one blob request from the store (blocking: called through `spawn_blocking`).
//! Private blobs are answered `Denied` to peers not on their allow-list, whatever is asked.

use libp2p::PeerId;

use crate::mesh::blob::{BlobError, BlobRequest, BlobResponse, BlobStore};

/// The answer to `request` from `peer`.
pub fn respond(
    store: &BlobStore,
    peer: &PeerId,
    request: &BlobRequest,
) -> Result<BlobResponse, BlobError> {
    let id = request.id();
    if !store.is_allowed(&id, peer) {
        return Ok(BlobResponse::Denied);
    }
    Ok(match request {
        BlobRequest::Manifest { .. } => match store.manifest_bytes(&id)? {
            Some(bytes) => BlobResponse::Manifest { bytes },
            None => BlobResponse::NotFound,
        },
        BlobRequest::Have { .. } => match store.state(&id)? {
            Some(state) => BlobResponse::Have { have: state.have() },
            None => BlobResponse::NotFound,
        },
        BlobRequest::Chunk { index, .. } => {
            let Some(state) = store.state(&id)? else {
                return Ok(BlobResponse::NotFound);
            };
            // Read the bitfield first: it then never claims less than the chunk we send.
            let have = state.have();
            match store.read_chunk(&id, *index)? {
                Some(data) => BlobResponse::Chunk { data, have },
                None => BlobResponse::NotFound,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{mesh::blob::Bitfield, store::Db};

    #[test]
    fn serves_what_it_has_and_denies_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(Db::open_dir(dir.path()).unwrap()).unwrap();
        let data = vec![5u8; 3000];
        let id = store.put(&data).unwrap().id().unwrap();
        let peer = PeerId::random();
        match respond(&store, &peer, &BlobRequest::Chunk { id, index: 0 }).unwrap() {
            BlobResponse::Chunk { data: d, have } => {
                assert_eq!(d, data);
                assert_eq!(have, Bitfield::full(1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            respond(&store, &peer, &BlobRequest::Chunk { id, index: 1 }).unwrap(),
            BlobResponse::NotFound
        );
        let unknown = crate::hash::Hash32::of(b"none");
        assert_eq!(
            respond(&store, &peer, &BlobRequest::Manifest { id: unknown }).unwrap(),
            BlobResponse::NotFound
        );
        store
            .set_acl(&id, Some([PeerId::random()].into_iter().collect()))
            .unwrap();
        assert_eq!(
            respond(&store, &peer, &BlobRequest::Have { id }).unwrap(),
            BlobResponse::Denied
        );
    }
}
