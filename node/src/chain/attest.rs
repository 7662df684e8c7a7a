//! Coordinator attestations: the EIP-712 `Attestation` a job's coordinator signs over the
//! validation accuracy it measured for a contributor's update, and which `TrainingPool`
//! checks in `submitUpdate`/`verifyProof`. Pure: no I/O, no clock.

use alloy::primitives::{Address, B256, Bytes, Signature, U256};
use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};

use super::Error;

/// EIP-712 domain name of TrainingPool.
pub const DOMAIN_NAME: &str = "QuackMesh TrainingPool";
/// EIP-712 domain version of TrainingPool.
pub const DOMAIN_VERSION: &str = "1";
/// Length of a signature as the contract takes it: r (32) || s (32) || v (1).
pub const SIGNATURE_LEN: usize = 65;

sol! {
    /// What the coordinator attests: `accuracyBps` is the accuracy it measured for `updateHash`
    /// from `contributor` in `round`, while holding `term` of `jobId`.
    #[derive(Debug, PartialEq, Eq)]
    struct Attestation {
        uint256 jobId;
        uint64 round;
        bytes32 updateHash;
        address contributor;
        uint16 accuracyBps;
        uint64 term;
    }
}

/// The signing domain of the TrainingPool at `pool` on chain `chain_id`.
pub fn domain(chain_id: u64, pool: Address) -> Eip712Domain {
    eip712_domain! {
        name: DOMAIN_NAME,
        version: DOMAIN_VERSION,
        chain_id: chain_id,
        verifying_contract: pool,
    }
}

impl Attestation {
    /// An attestation; `job_id` as the contract's uint256.
    pub fn new(
        job_id: U256,
        round: u64,
        update_hash: B256,
        contributor: Address,
        accuracy_bps: u16,
        term: u64,
    ) -> Self {
        Self {
            jobId: job_id,
            round,
            updateHash: update_hash,
            contributor,
            accuracyBps: accuracy_bps,
            term,
        }
    }

    /// The EIP-712 digest that is signed (equals the contract's `attestationDigest`).
    pub fn digest(&self, domain: &Eip712Domain) -> B256 {
        self.eip712_signing_hash(domain)
    }

    /// Signs as the coordinator; returns the 65-byte r||s||v signature the contract takes.
    pub fn sign(&self, signer: &PrivateKeySigner, domain: &Eip712Domain) -> Result<Bytes, Error> {
        if self.accuracyBps > 10_000 {
            return Err(Error::InvalidArgument {
                name: "accuracy_bps",
                reason: format!("{} is above 10000", self.accuracyBps),
            });
        }
        let sig = signer
            .sign_hash_sync(&self.digest(domain))
            .map_err(|e| Error::Key(format!("signing failed: {e}")))?;
        Ok(Bytes::from(sig.as_bytes().to_vec()))
    }

    /// The address that made `signature` over this attestation.
    pub fn recover(&self, domain: &Eip712Domain, signature: &[u8]) -> Result<Address, Error> {
        if signature.len() != SIGNATURE_LEN {
            return Err(Error::Decode {
                what: "attestation signature".into(),
                reason: format!("{} bytes, expected {SIGNATURE_LEN}", signature.len()),
            });
        }
        let sig = Signature::try_from(signature).map_err(|e| Error::Decode {
            what: "attestation signature".into(),
            reason: e.to_string(),
        })?;
        sig.recover_address_from_prehash(&self.digest(domain))
            .map_err(|e| Error::Decode {
                what: "attestation signature".into(),
                reason: e.to_string(),
            })
    }

    /// Whether `signature` is `expected`'s signature over this attestation.
    pub fn verify(&self, domain: &Eip712Domain, signature: &[u8], expected: Address) -> bool {
        self.recover(domain, signature)
            .is_ok_and(|signer| signer == expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::keys::dev_signer;
    use alloy::primitives::{address, keccak256};
    use alloy::sol_types::SolValue;

    fn sample() -> Attestation {
        Attestation::new(
            U256::from(7),
            2,
            B256::repeat_byte(0xab),
            address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            8_123,
            3,
        )
    }

    #[test]
    fn digest_matches_eip712_computed_by_hand() {
        let pool = Address::repeat_byte(0x42);
        let d = domain(31337, pool);
        let domain_hash = keccak256(
            (
                keccak256(
                    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)",
                ),
                keccak256(DOMAIN_NAME),
                keccak256(DOMAIN_VERSION),
                U256::from(31337),
                pool,
            )
                .abi_encode(),
        );
        let a = sample();
        let struct_hash = keccak256(
            (
                keccak256(
                    "Attestation(uint256 jobId,uint64 round,bytes32 updateHash,address contributor,uint16 accuracyBps,uint64 term)",
                ),
                a.jobId,
                a.round,
                a.updateHash,
                a.contributor,
                a.accuracyBps,
                a.term,
            )
                .abi_encode(),
        );
        let mut buf = vec![0x19, 0x01];
        buf.extend_from_slice(domain_hash.as_slice());
        buf.extend_from_slice(struct_hash.as_slice());
        assert_eq!(a.digest(&d), keccak256(buf));
    }

    #[test]
    fn sign_then_recover_gives_the_signer() {
        let signer = dev_signer(1).unwrap();
        let d = domain(31337, Address::repeat_byte(1));
        let a = sample();
        let sig = a.sign(&signer, &d).unwrap();
        assert_eq!(sig.len(), SIGNATURE_LEN);
        assert!(sig[64] == 27 || sig[64] == 28, "v as the contract expects");
        assert_eq!(a.recover(&d, &sig).unwrap(), signer.address());
        assert!(a.verify(&d, &sig, signer.address()));
    }

    #[test]
    fn any_changed_field_or_domain_breaks_verification() {
        let signer = dev_signer(1).unwrap();
        let d = domain(31337, Address::repeat_byte(1));
        let sig = sample().sign(&signer, &d).unwrap();
        let who = signer.address();
        let mut a = sample();
        a.accuracyBps += 1;
        assert!(!a.verify(&d, &sig, who));
        let mut a = sample();
        a.term += 1;
        assert!(!a.verify(&d, &sig, who));
        let mut a = sample();
        a.contributor = Address::ZERO;
        assert!(!a.verify(&d, &sig, who));
        assert!(!sample().verify(&domain(202105, Address::repeat_byte(1)), &sig, who));
        assert!(!sample().verify(&domain(31337, Address::repeat_byte(2)), &sig, who));
    }

    #[test]
    fn malformed_signatures_are_errors() {
        let d = domain(31337, Address::repeat_byte(1));
        assert!(sample().recover(&d, &[0u8; 64]).is_err());
        assert!(!sample().verify(&d, &[0u8; 65], Address::ZERO));
        assert!(sample().sign(&dev_signer(0).unwrap(), &d).is_ok());
        let mut over = sample();
        over.accuracyBps = 10_001;
        assert!(over.sign(&dev_signer(0).unwrap(), &d).is_err());
    }
}
