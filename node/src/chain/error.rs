//! `chain::Error`: every way a chain operation can fail, with the decision callers need
//! (`is_retryable`) and the decoded revert reason when a contract refused.

use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes};
use alloy::sol_types::SolError;
use alloy::transports::{RpcError, TransportError, TransportErrorKind};

use crate::store::StoreError;

/// Errors of the chain layer. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The RPC endpoint failed or answered with an error (not a revert).
    #[error("rpc {op} failed: {message}")]
    Rpc {
        /// What we were doing (`eth_getLogs`, `send listMachine`, ...).
        op: String,
        /// The transport's or node's explanation.
        message: String,
        /// Whether trying again later may succeed (connection errors, rate limits, 5xx).
        retryable: bool,
    },
    /// A contract reverted, either while estimating gas (nothing was sent) or on chain.
    #[error("{op} reverted: {reason}")]
    Reverted {
        /// The call or transaction label.
        op: String,
        /// The decoded custom error, `Error(string)` or `Panic(code)`.
        reason: String,
        /// Raw revert data, for matching a specific error with [`Error::decode_revert`].
        data: Option<Bytes>,
        /// The transaction, when it was mined and failed.
        tx_hash: Option<B256>,
    },
    /// No receipt arrived in time; the transaction stays recorded and is retried on restart.
    #[error("no receipt for {op} ({tx_hash}) after {waited:?}")]
    ReceiptTimeout {
        /// The transaction label.
        op: String,
        /// The transaction.
        tx_hash: B256,
        /// How long we waited.
        waited: Duration,
    },
    /// The endpoint serves another chain than the network we were asked to use.
    #[error("network {network} expects chain id {expected}, but the rpc reports {actual}")]
    ChainIdMismatch {
        /// The configured network.
        network: String,
        /// Its chain id.
        expected: u64,
        /// What the endpoint reported.
        actual: u64,
    },
    /// A network or deployment setting is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A signing key could not be loaded (the message never includes the key).
    #[error("key: {0}")]
    Key(String),
    /// The operation needs a signing key, but the client was opened read-only.
    #[error("{0} needs a signing key (set QUACKMESH_PRIVATE_KEY or pass a key file)")]
    NoSigner(String),
    /// A receipt did not contain the event the operation must emit.
    #[error("{op}: receipt {tx_hash} has no {event} event")]
    MissingEvent {
        /// The transaction label.
        op: String,
        /// The transaction.
        tx_hash: B256,
        /// The expected event.
        event: &'static str,
    },
    /// A value from the chain could not be decoded or does not fit.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// Why.
        reason: String,
    },
    /// A value given to an operation is out of range (checked before anything is sent).
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        /// The argument.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The contract at an address is missing (wrong deployment file or network).
    #[error("no contract code at {address} ({name})")]
    NoCode {
        /// Which contract.
        name: &'static str,
        /// Where it was expected.
        address: Address,
    },
    /// The durable store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sender or watcher task has stopped (node shutting down).
    #[error("{0} has stopped")]
    Stopped(&'static str),
}

impl Error {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Rpc { retryable, .. } => *retryable,
            Error::ReceiptTimeout { .. } => true,
            Error::Reverted { .. }
            | Error::ChainIdMismatch { .. }
            | Error::Config(_)
            | Error::Io { .. }
            | Error::Key(_)
            | Error::NoSigner(_)
            | Error::MissingEvent { .. }
            | Error::Decode { .. }
            | Error::InvalidArgument { .. }
            | Error::NoCode { .. }
            | Error::Store(_)
            | Error::Stopped(_) => false,
        }
    }

    /// The revert data, when a contract reverted.
    pub fn revert_data(&self) -> Option<&[u8]> {
        match self {
            Error::Reverted { data: Some(d), .. } => Some(d),
            _ => None,
        }
    }

    /// The revert decoded as custom error `E`, when the contract reverted with exactly that one:
    /// `err.decode_revert::<TrainingPool::TrainingPoolStaleTerm>()`.
    pub fn decode_revert<E: SolError>(&self) -> Option<E> {
        self.revert_data().and_then(|d| E::abi_decode(d).ok())
    }

    /// An RPC failure, classified; reverts reported by the node become [`Error::Reverted`].
    pub(crate) fn from_rpc(op: impl Into<String>, err: TransportError) -> Self {
        let op = op.into();
        if let Some(payload) = err.as_error_resp() {
            if let Some(data) = payload.as_revert_data() {
                return Error::Reverted {
                    reason: super::bindings::decode_revert(&data),
                    op,
                    data: Some(data),
                    tx_hash: None,
                };
            }
            if is_revert_message(&payload.message) {
                return Error::Reverted {
                    reason: payload.message.to_string(),
                    op,
                    data: None,
                    tx_hash: None,
                };
            }
        }
        Error::Rpc {
            retryable: rpc_retryable(&err),
            message: err.to_string(),
            op,
        }
    }

    pub(crate) fn io(path: &std::path::Path, err: impl std::fmt::Display) -> Self {
        Error::Io {
            path: path.display().to_string(),
            reason: err.to_string(),
        }
    }
}

fn is_revert_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("execution reverted") || m.contains("revert")
}

/// Connection-level failures and rate limits are retryable; an error response from the node
/// (bad nonce, insufficient funds, invalid params) is not, except the "try later" kinds.
fn rpc_retryable(err: &TransportError) -> bool {
    match err {
        RpcError::Transport(TransportErrorKind::NonRetryable(_)) => false,
        RpcError::Transport(_) => true,
        RpcError::NullResp => true,
        RpcError::ErrorResp(payload) => {
            let m = payload.message.to_ascii_lowercase();
            payload.is_retry_err()
                || m.contains("header not found")
                || m.contains("timeout")
                || m.contains("temporarily")
                || m.contains("too many requests")
        }
        RpcError::UnsupportedFeature(_)
        | RpcError::LocalUsageError(_)
        | RpcError::SerError(_)
        | RpcError::DeserError { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::bindings::TrainingPool;
    use alloy::primitives::U256;

    fn error_resp(code: i64, message: &str, data: Option<&str>) -> TransportError {
        let json = match data {
            Some(d) => format!(r#"{{"code":{code},"message":"{message}","data":"{d}"}}"#),
            None => format!(r#"{{"code":{code},"message":"{message}"}}"#),
        };
        RpcError::ErrorResp(serde_json::from_str(&json).unwrap())
    }

    #[test]
    fn revert_with_custom_error_is_decoded() {
        let stale = TrainingPool::TrainingPoolStaleTerm {
            jobId: U256::from(3),
            term: 1,
            currentTerm: 2,
        };
        let data = format!("0x{}", hex::encode(stale.abi_encode()));
        let err = Error::from_rpc(
            "submitUpdate",
            error_resp(3, "execution reverted", Some(&data)),
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("TrainingPoolStaleTerm"));
        let back = err
            .decode_revert::<TrainingPool::TrainingPoolStaleTerm>()
            .unwrap();
        assert_eq!(back.currentTerm, 2);
        assert!(
            err.decode_revert::<TrainingPool::TrainingPoolJobOver>()
                .is_none()
        );
    }

    #[test]
    fn transport_errors_are_retryable_and_node_errors_are_not() {
        let conn = Error::from_rpc("eth_blockNumber", TransportErrorKind::backend_gone());
        assert!(conn.is_retryable());
        let nonce = Error::from_rpc("send", error_resp(-32000, "nonce too low", None));
        assert!(!nonce.is_retryable());
        let limited = Error::from_rpc("send", error_resp(-32005, "too many requests", None));
        assert!(limited.is_retryable());
        assert!(
            Error::ReceiptTimeout {
                op: "x".into(),
                tx_hash: B256::ZERO,
                waited: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(!Error::Config("bad".into()).is_retryable());
    }

    #[test]
    fn revert_message_without_data_is_still_a_revert() {
        let err = Error::from_rpc("call", error_resp(-32000, "execution reverted", None));
        assert!(matches!(err, Error::Reverted { data: None, .. }));
    }
}
