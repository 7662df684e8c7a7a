//! The node's persistent libp2p identity: an ed25519 key in `<data dir>/identity.key`
//! (protobuf encoding, mode 0600), created on first start. The PeerId derives from it, so
//! keeping the file keeps the PeerId. The key is never logged.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;

use crate::node::NodeError;

/// File name of the key inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";

fn err(path: &Path, reason: impl std::fmt::Display) -> NodeError {
    NodeError::Identity {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Loads the key from `data_dir`, or creates and saves a new one.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, NodeError> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            warn_if_readable_by_others(&path);
            Keypair::from_protobuf_encoding(&bytes).map_err(|e| err(&path, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            save(&path, &key)?;
            Ok(key)
        }
        Err(e) => Err(err(&path, e)),
    }
}

/// Writes the key atomically (temporary file, fsync, rename) with mode 0600.
fn save(path: &Path, key: &Keypair) -> Result<(), NodeError> {
    let bytes = key.to_protobuf_encoding().map_err(|e| err(path, e))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(path, e))?;
    }
    let tmp: PathBuf = path.with_extension("key.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| err(&tmp, e))?;
    file.write_all(&bytes).map_err(|e| err(&tmp, e))?;
    file.sync_all().map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))?;
    Ok(())
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(target: "node", path = %path.display(), "identity key is readable by other users; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_identity_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), b"garbage").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(NodeError::Identity { .. })
        ));
    }
}
