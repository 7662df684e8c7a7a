//! Loading the node's Ethereum key: a hex key from `QUACKMESH_PRIVATE_KEY`, a key file, an
//! encrypted keystore in the data dir, or (devnet only) one of anvil's well-known accounts.
//! Errors and logs name where a key came from, never the key.

use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;

use super::Error;

/// Environment variable holding a hex private key.
pub const PRIVATE_KEY_ENV: &str = "QUACKMESH_PRIVATE_KEY";
/// Environment variable holding the keystore password.
pub const KEYSTORE_PASSWORD_ENV: &str = "QUACKMESH_KEYSTORE_PASSWORD";
/// The keystore file inside a node's data dir.
pub const KEYSTORE_FILE: &str = "keystore.json";

/// anvil's first ten accounts (from its public default mnemonic). They hold ETH on every
/// devnet and must never be used anywhere else: [`resolve_signer`] only offers them when the
/// network's chain id is anvil's.
pub const DEV_KEYS: [&str; 10] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "dbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// anvil's well-known account `index` (0..10).
pub fn dev_signer(index: usize) -> Result<PrivateKeySigner, Error> {
    let hex = DEV_KEYS
        .get(index)
        .ok_or_else(|| Error::Key(format!("anvil has dev accounts 0..10, not {index}")))?;
    parse_private_key(hex)
}

/// All ten anvil accounts.
pub fn dev_signers() -> Vec<PrivateKeySigner> {
    (0..DEV_KEYS.len())
        .filter_map(|i| dev_signer(i).ok())
        .collect()
}

/// Parses a 32-byte hex private key (optional `0x`, surrounding whitespace ignored).
pub fn parse_private_key(text: &str) -> Result<PrivateKeySigner, Error> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0x").unwrap_or(digits);
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(digits, &mut bytes)
        .map_err(|_| Error::Key("expected 64 hex digits".into()))?;
    PrivateKeySigner::from_slice(&bytes)
        .map_err(|_| Error::Key("not a valid secp256k1 private key".into()))
}

/// Reads a file holding a hex private key.
pub fn load_key_file(path: &Path) -> Result<PrivateKeySigner, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_private_key(&text).map_err(|e| Error::Key(format!("{}: {e}", path.display())))
}

/// Creates a fresh key, stores it encrypted with `password` at `dir/KEYSTORE_FILE`, and returns
/// it. Refuses to overwrite an existing keystore.
pub fn create_keystore(dir: &Path, password: &str) -> Result<(PrivateKeySigner, PathBuf), Error> {
    let path = dir.join(KEYSTORE_FILE);
    if path.exists() {
        return Err(Error::Key(format!(
            "{} already exists; refusing to overwrite a key",
            path.display()
        )));
    }
    if password.is_empty() {
        return Err(Error::Key("keystore password must not be empty".into()));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = alloy::signers::k256::elliptic_curve::rand_core::OsRng;
    let (signer, _) = PrivateKeySigner::new_keystore(dir, &mut rng, password, Some(KEYSTORE_FILE))
        .map_err(|e| Error::Key(format!("cannot write keystore {}: {e}", path.display())))?;
    Ok((signer, path))
}

/// Decrypts a keystore file.
pub fn load_keystore(path: &Path, password: &str) -> Result<PrivateKeySigner, Error> {
    PrivateKeySigner::decrypt_keystore(path, password)
        .map_err(|e| Error::Key(format!("cannot decrypt keystore {}: {e}", path.display())))
}

/// Longest keystore password file read.
const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

/// Reads a keystore password from `path`: the file's text without its trailing line break.
pub fn read_password_file(path: &Path) -> Result<String, Error> {
    let err = |reason: String| Error::Key(format!("password file {}: {reason}", path.display()));
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > MAX_PASSWORD_FILE_BYTES {
        return Err(err(format!("longer than {MAX_PASSWORD_FILE_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Where to look for a key; see [`resolve_signer`] for the order.
#[derive(Debug, Clone, Default)]
pub struct KeyOptions {
    /// A file holding a hex private key.
    pub private_key_file: Option<PathBuf>,
    /// A hex private key (normally from `QUACKMESH_PRIVATE_KEY`); never logged.
    pub private_key: Option<String>,
    /// A keystore file (default: `<data dir>/keystore.json` when it exists).
    pub keystore: Option<PathBuf>,
    /// The keystore password (normally from `QUACKMESH_KEYSTORE_PASSWORD`); never logged.
    pub keystore_password: Option<String>,
    /// The node's data dir, searched for a keystore.
    pub data_dir: Option<PathBuf>,
    /// On a devnet, fall back to anvil's account with this index.
    pub dev_account: Option<usize>,
}

impl KeyOptions {
    /// Options filled from `QUACKMESH_PRIVATE_KEY` and `QUACKMESH_KEYSTORE_PASSWORD`.
    pub fn from_env() -> Self {
        Self {
            private_key: std::env::var(PRIVATE_KEY_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty()),
            keystore_password: std::env::var(KEYSTORE_PASSWORD_ENV).ok(),
            ..Self::default()
        }
    }
}

/// Where a resolved key came from (safe to print).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `--private-key-file`.
    File(PathBuf),
    /// `QUACKMESH_PRIVATE_KEY`.
    Env,
    /// An encrypted keystore.
    Keystore(PathBuf),
    /// anvil's well-known account.
    DevAccount(usize),
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyOrigin::File(p) => write!(f, "key file {}", p.display()),
            KeyOrigin::Env => write!(f, "${PRIVATE_KEY_ENV}"),
            KeyOrigin::Keystore(p) => write!(f, "keystore {}", p.display()),
            KeyOrigin::DevAccount(i) => write!(f, "anvil dev account {i}"),
        }
    }
}

/// Finds the signing key: a key file, then `QUACKMESH_PRIVATE_KEY`, then a keystore (explicit or
/// in the data dir), then, only when `devnet` is true, anvil's dev account. `Ok(None)` when
/// there is no key (read-only use).
pub fn resolve_signer(
    opts: &KeyOptions,
    devnet: bool,
) -> Result<Option<(PrivateKeySigner, KeyOrigin)>, Error> {
    if let Some(path) = &opts.private_key_file {
        return Ok(Some((load_key_file(path)?, KeyOrigin::File(path.clone()))));
    }
    if let Some(hex) = &opts.private_key {
        let signer =
            parse_private_key(hex).map_err(|e| Error::Key(format!("${PRIVATE_KEY_ENV}: {e}")))?;
        return Ok(Some((signer, KeyOrigin::Env)));
    }
    let keystore = opts.keystore.clone().or_else(|| {
        opts.data_dir
            .as_ref()
            .map(|d| d.join(KEYSTORE_FILE))
            .filter(|p| p.exists())
    });
    if let Some(path) = keystore {
        let password = opts.keystore_password.as_deref().ok_or_else(|| {
            Error::Key(format!(
                "keystore {} needs a password (set ${KEYSTORE_PASSWORD_ENV})",
                path.display()
            ))
        })?;
        return Ok(Some((
            load_keystore(&path, password)?,
            KeyOrigin::Keystore(path),
        )));
    }
    match opts.dev_account {
        Some(i) if devnet => Ok(Some((dev_signer(i)?, KeyOrigin::DevAccount(i)))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_account_zero_is_anvils_first_account() {
        assert_eq!(
            dev_signer(0).unwrap().address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        assert_eq!(
            dev_signer(9).unwrap().address().to_string(),
            "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"
        );
        assert!(dev_signer(10).is_err());
        assert_eq!(dev_signers().len(), 10);
    }

    #[test]
    fn bad_keys_are_rejected_without_echoing_them() {
        let secret = "zz0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        let err = parse_private_key(secret).unwrap_err().to_string();
        assert!(!err.contains(&secret[2..20]), "{err}");
        assert!(parse_private_key("00").is_err());
        assert!(
            parse_private_key(&"0".repeat(64)).is_err(),
            "zero is no key"
        );
        assert!(parse_private_key(&format!("0x{}\n", DEV_KEYS[1])).is_ok());
    }

    #[test]
    fn keystore_opens_with_a_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let (created, path) = create_keystore(dir.path(), "correct horse").unwrap();
        let pw = dir.path().join("password");
        std::fs::write(&pw, "correct horse\n").unwrap();
        let opts = KeyOptions {
            keystore: Some(path),
            keystore_password: Some(read_password_file(&pw).unwrap()),
            ..KeyOptions::default()
        };
        let (s, _) = resolve_signer(&opts, false).unwrap().unwrap();
        assert_eq!(s.address(), created.address());
        std::fs::write(&pw, vec![b'x'; 5000]).unwrap();
        assert!(read_password_file(&pw).is_err(), "oversized");
        assert!(read_password_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn signer_debug_does_not_print_the_key() {
        let signer = dev_signer(0).unwrap();
        let shown = format!("{signer:?}");
        assert!(!shown.contains(&DEV_KEYS[0][..16]), "{shown}");
    }

    #[test]
    fn resolve_prefers_file_then_env_then_keystore_then_dev() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.hex");
        std::fs::write(&file, DEV_KEYS[3]).unwrap();
        let mut opts = KeyOptions {
            private_key_file: Some(file.clone()),
            private_key: Some(DEV_KEYS[4].into()),
            dev_account: Some(0),
            ..KeyOptions::default()
        };
        let (s, origin) = resolve_signer(&opts, true).unwrap().unwrap();
        assert_eq!(s.address(), dev_signer(3).unwrap().address());
        assert_eq!(origin, KeyOrigin::File(file));
        opts.private_key_file = None;
        let (s, origin) = resolve_signer(&opts, true).unwrap().unwrap();
        assert_eq!(s.address(), dev_signer(4).unwrap().address());
        assert_eq!(origin, KeyOrigin::Env);
        opts.private_key = None;
        let (_, origin) = resolve_signer(&opts, true).unwrap().unwrap();
        assert_eq!(origin, KeyOrigin::DevAccount(0));
        assert!(
            resolve_signer(&opts, false).unwrap().is_none(),
            "no dev keys off devnet"
        );
    }

    #[test]
    fn keystore_round_trip_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, path) = create_keystore(dir.path(), "quack").unwrap();
        assert!(create_keystore(dir.path(), "quack").is_err());
        assert!(load_keystore(&path, "wrong").is_err());
        let opts = KeyOptions {
            data_dir: Some(dir.path().to_path_buf()),
            keystore_password: Some("quack".into()),
            ..KeyOptions::default()
        };
        let (loaded, origin) = resolve_signer(&opts, false).unwrap().unwrap();
        assert_eq!(loaded.address(), signer.address());
        assert_eq!(origin, KeyOrigin::Keystore(path));
    }
}
