//! `chain::Client`: one typed method per contract function the node needs. Reads go straight
//! to the RPC (with retries); writes go through the client's [`TxSender`], wait for the
//! receipt, and return the value the contract emitted (new ids, amounts paid) with the receipt.
//! Methods that pull $DUCK approve the contract first when the allowance is short.

use std::time::Duration;

use alloy::contract::SolCallBuilder;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolCall, SolEvent};

use super::bindings::{
    ComputeMarketplace, DuckToken, IComputeMarketplace, IInferencePool, ITrainingPool,
    InferencePool, TrainingPool,
};
use super::retry::RetryPolicy;
use super::tx::{TxConfig, TxSender};
use super::watcher::{EventStream, Watcher, WatcherConfig};
use super::{Config, Deployment, Error, attest};
use crate::store::Db;

/// What a machine declares when listed.
pub type MachineSpecs = IComputeMarketplace::MachineSpecs;
/// A listing as stored on chain.
pub type Machine = IComputeMarketplace::Machine;
/// A rental as stored on chain.
pub type Rental = IComputeMarketplace::Rental;
/// One machine of a rented cluster, with its PeerId and address.
pub type ClusterMember = IComputeMarketplace::ClusterMember;
/// A training job's spec (what the requester asks for and pays).
pub type JobSpec = ITrainingPool::JobSpec;
/// A training job and its progress.
pub type Job = ITrainingPool::Job;
/// What a coordinator recorded for a round.
pub type RoundRecord = ITrainingPool::RoundRecord;
/// A coordinator's registration.
pub type Coordinator = ITrainingPool::Coordinator;
/// An inference job.
pub type InferenceJob = IInferencePool::InferenceJob;
/// A posted inference result.
pub type PartResult = IInferencePool::PartResult;

/// `JobSpec.rewardMode`: pay `rewardPerUpdate` per accepted update.
pub const REWARD_PER_UPDATE: u8 = 0;
/// `JobSpec.rewardMode`: split `rewardPerRound` over `maxUpdatesPerRound` slots.
pub const REWARD_PER_ROUND: u8 = 1;

/// A confirmed transaction and the value it produced.
#[derive(Debug, Clone)]
pub struct Sent<T> {
    /// What the contract returned through its event (an id, an amount), or `()`.
    pub value: T,
    /// The receipt.
    pub receipt: TransactionReceipt,
}

impl<T> Sent<T> {
    /// The transaction hash.
    pub fn tx_hash(&self) -> B256 {
        self.receipt.transaction_hash
    }

    /// Gas the transaction used.
    pub fn gas_used(&self) -> u64 {
        self.receipt.gas_used
    }
}

/// A job's current coordinator term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermInfo {
    /// The term number (0 = never claimed).
    pub term: u64,
    /// Its holder.
    pub holder: Address,
    /// Its last claim, renewal or recorded round (unix seconds).
    pub last_activity: u64,
    /// The lease length in seconds.
    pub lease_seconds: u64,
    /// Whether the lease is live now.
    pub live: bool,
}

/// A rented cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Who rented it.
    pub renter: Address,
    /// Its rentals.
    pub rental_ids: Vec<U256>,
    /// The machines, in the same order.
    pub machine_ids: Vec<U256>,
}

/// Typed access to the four contracts of a deployment.
#[derive(Debug, Clone)]
pub struct Client {
    provider: DynProvider,
    deployment: Deployment,
    sender: Option<TxSender>,
    retry: RetryPolicy,
}

/// An HTTP provider without fillers: the [`TxSender`] fills transactions itself.
pub fn connect_http(url: &str) -> Result<DynProvider, Error> {
    let url: reqwest::Url = url
        .parse()
        .map_err(|e| Error::Config(format!("rpc url {url:?}: {e}")))?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_http(url)
        .erased())
}

/// Checks that the endpoint serves `expected` chain id.
pub async fn check_chain_id(
    provider: &DynProvider,
    network: &str,
    expected: u64,
) -> Result<(), Error> {
    let actual = RetryPolicy::default()
        .run("eth_chainId", || provider.get_chain_id())
        .await?;
    if actual != expected {
        return Err(Error::ChainIdMismatch {
            network: network.to_owned(),
            expected,
            actual,
        });
    }
    Ok(())
}

impl Client {
    /// Connects to `config`'s endpoint, checks its chain id, loads the deployment, and with a
    /// signer starts its transaction sender (recording pending transactions in `db`).
    pub async fn connect(
        config: &Config,
        signer: Option<PrivateKeySigner>,
        db: Option<Db>,
    ) -> Result<Self, Error> {
        let provider = connect_http(&config.rpc_url)?;
        check_chain_id(&provider, &config.network.name, config.network.chain_id).await?;
        let deployment = config.load_deployment()?;
        let tx_config = TxConfig {
            poll_interval: config.network.poll_interval(),
            ..TxConfig::default()
        };
        Self::with_provider(provider, deployment, signer, db, tx_config).await
    }

    /// A client over an existing provider and deployment (tests, the devnet helper).
    pub async fn with_provider(
        provider: DynProvider,
        deployment: Deployment,
        signer: Option<PrivateKeySigner>,
        db: Option<Db>,
        tx_config: TxConfig,
    ) -> Result<Self, Error> {
        let sender = match signer {
            Some(s) => Some(TxSender::spawn(provider.clone(), s, db, tx_config).await?.0),
            None => None,
        };
        Ok(Self {
            provider,
            deployment,
            sender,
            retry: RetryPolicy::default(),
        })
    }

    /// The RPC provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The deployment in use.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The signing account, if any.
    pub fn address(&self) -> Option<Address> {
        self.sender.as_ref().map(TxSender::address)
    }

    /// The transaction sender, if the client has a key.
    pub fn sender(&self) -> Option<&TxSender> {
        self.sender.as_ref()
    }

    /// Starts a [`Watcher`] over this deployment's events with a cursor named `config.name`.
    pub fn watch(
        &self,
        db: Db,
        config: WatcherConfig,
    ) -> Result<(EventStream, tokio::task::JoinHandle<()>), Error> {
        Watcher::spawn(self.provider.clone(), self.deployment.clone(), db, config)
    }

    /// The EIP-712 domain coordinators sign attestations in.
    pub fn attestation_domain(&self) -> Eip712Domain {
        attest::domain(self.deployment.chain_id, self.deployment.training_pool)
    }

    fn token(&self) -> DuckToken::DuckTokenInstance<DynProvider> {
        DuckToken::new(self.deployment.duck_token, self.provider.clone())
    }

    fn market(&self) -> ComputeMarketplace::ComputeMarketplaceInstance<DynProvider> {
        ComputeMarketplace::new(self.deployment.compute_marketplace, self.provider.clone())
    }

    fn pool(&self) -> TrainingPool::TrainingPoolInstance<DynProvider> {
        TrainingPool::new(self.deployment.training_pool, self.provider.clone())
    }

    fn inference(&self) -> InferencePool::InferencePoolInstance<DynProvider> {
        InferencePool::new(self.deployment.inference_pool, self.provider.clone())
    }

    fn signer_address(&self, op: &str) -> Result<Address, Error> {
        self.address().ok_or_else(|| Error::NoSigner(op.to_owned()))
    }

    /// Sends `data` to `to` through the sender and waits for a successful receipt.
    async fn send(&self, op: &str, to: Address, data: Bytes) -> Result<TransactionReceipt, Error> {
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| Error::NoSigner(op.to_owned()))?;
        sender
            .send(op, TransactionRequest::default().to(to).input(data.into()))
            .await
    }

    /// Runs a contract read with retries on transient failures.
    async fn read<C: SolCall>(
        &self,
        op: &str,
        call: SolCallBuilder<&DynProvider, C>,
    ) -> Result<C::Return, Error> {
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            match call.call().await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let err = contract_error(op, e);
                    if !err.is_retryable() || attempt >= attempts {
                        return Err(err);
                    }
                    tokio::time::sleep(self.retry.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    // ------------------------------------------------------------------ chain

    /// The latest block number.
    pub async fn block_number(&self) -> Result<u64, Error> {
        self.retry
            .run("eth_blockNumber", || self.provider.get_block_number())
            .await
    }

    /// The gas-token (ETH/TON) balance of `who`.
    pub async fn native_balance(&self, who: Address) -> Result<U256, Error> {
        self.retry
            .run("eth_getBalance", || self.provider.get_balance(who))
            .await
    }

    /// Checks that every contract of the deployment has code (a wrong file or network fails).
    pub async fn check_deployment(&self) -> Result<(), Error> {
        for (name, address) in self.deployment.contracts() {
            let code = self
                .retry
                .run("eth_getCode", || self.provider.get_code_at(address))
                .await?;
            if code.is_empty() {
                return Err(Error::NoCode { name, address });
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ token

    /// $DUCK balance of `who`.
    pub async fn balance(&self, who: Address) -> Result<U256, Error> {
        let t = self.token();
        self.read("balanceOf", t.balanceOf(who)).await
    }

    /// $DUCK `owner` allows `spender` to pull.
    pub async fn allowance(&self, owner: Address, spender: Address) -> Result<U256, Error> {
        let t = self.token();
        self.read("allowance", t.allowance(owner, spender)).await
    }

    /// Allows `spender` to pull `amount` of the caller's $DUCK.
    pub async fn approve(&self, spender: Address, amount: U256) -> Result<Sent<()>, Error> {
        let data = self.token().approve(spender, amount).calldata().clone();
        let receipt = self
            .send("approve", self.deployment.duck_token, data)
            .await?;
        Ok(Sent { value: (), receipt })
    }

    /// Approves `spender` for `amount` unless the allowance already covers it.
    pub async fn ensure_allowance(&self, spender: Address, amount: U256) -> Result<(), Error> {
        let me = self.signer_address("approve")?;
        if self.allowance(me, spender).await? < amount {
            self.approve(spender, amount).await?;
        }
        Ok(())
    }

    /// Sends `amount` $DUCK to `to`.
    pub async fn transfer(&self, to: Address, amount: U256) -> Result<Sent<()>, Error> {
        let data = self.token().transfer(to, amount).calldata().clone();
        let receipt = self
            .send("transfer", self.deployment.duck_token, data)
            .await?;
        Ok(Sent { value: (), receipt })
    }

    /// Draws `amount` from DuckToken's faucet (devnet/testnet deployments only).
    pub async fn faucet(&self, amount: U256) -> Result<Sent<()>, Error> {
        self.require_own_token("faucet")?;
        let data = self.token().faucet(amount).calldata().clone();
        let receipt = self
            .send("faucet", self.deployment.duck_token, data)
            .await?;
        Ok(Sent { value: (), receipt })
    }

    /// What `who` may still draw from the faucet.
    pub async fn faucet_remaining(&self, who: Address) -> Result<U256, Error> {
        self.require_own_token("faucetRemaining")?;
        let t = self.token();
        self.read("faucetRemaining", t.faucetRemaining(who)).await
    }

    /// Mints `amount` to `to` (the DuckToken owner only, i.e. the deployer).
    pub async fn mint(&self, to: Address, amount: U256) -> Result<Sent<()>, Error> {
        self.require_own_token("mint")?;
        let data = self.token().mint(to, amount).calldata().clone();
        let receipt = self.send("mint", self.deployment.duck_token, data).await?;
        Ok(Sent { value: (), receipt })
    }

    fn require_own_token(&self, op: &str) -> Result<(), Error> {
        if self.deployment.duck_token_deployed {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "{op}: {} uses an existing $DUCK token without a faucet",
                self.deployment.network
            )))
        }
    }

    // ------------------------------------------------------------------ marketplace

    /// Lists a machine; returns its id.
    pub async fn list_machine(
        &self,
        specs: MachineSpecs,
        price_per_hour: U256,
    ) -> Result<Sent<U256>, Error> {
        let data = self
            .market()
            .listMachine(specs, price_per_hour)
            .calldata()
            .clone();
        let receipt = self
            .send("listMachine", self.deployment.compute_marketplace, data)
            .await?;
        let ev: ComputeMarketplace::MachineListed =
            event(&receipt, self.deployment.compute_marketplace, "listMachine")?;
        Ok(Sent {
            value: ev.machineId,
            receipt,
        })
    }

    /// Changes a listing's multiaddr and price.
    pub async fn update_machine(
        &self,
        machine_id: U256,
        multiaddr: String,
        price_per_hour: U256,
    ) -> Result<Sent<()>, Error> {
        let data = self
            .market()
            .updateMachine(machine_id, multiaddr, price_per_hour)
            .calldata()
            .clone();
        let receipt = self
            .send("updateMachine", self.deployment.compute_marketplace, data)
            .await?;
        Ok(Sent { value: (), receipt })
    }

    /// Unlists a machine that is not rented.
    pub async fn unlist_machine(&self, machine_id: U256) -> Result<Sent<()>, Error> {
        let data = self.market().unlistMachine(machine_id).calldata().clone();
        let receipt = self
            .send("unlistMachine", self.deployment.compute_marketplace, data)
            .await?;
        Ok(Sent { value: (), receipt })
    }

    /// Rents a machine for `hours` hours (approving price x hours first); returns the rental id.
    pub async fn rent_machine(&self, machine_id: U256, hours: u64) -> Result<Sent<U256>, Error> {
        let machine = self.machine(machine_id).await?;
        let cost =
            machine
                .pricePerHour
                .checked_mul(U256::from(hours))
                .ok_or(Error::InvalidArgument {
                    name: "hours",
                    reason: "price x hours overflows".into(),
                })?;
        self.ensure_allowance(self.deployment.compute_marketplace, cost)
            .await?;
        let data = self
            .market()
            .rentMachine(machine_id, U256::from(hours))
            .calldata()
            .clone();
        let receipt = self
            .send("rentMachine", self.deployment.compute_marketplace, data)
            .await?;
        let ev: ComputeMarketplace::MachineRented =
            event(&receipt, self.deployment.compute_marketplace, "rentMachine")?;
        Ok(Sent {
            value: ev.rentalId,
            receipt,
        })
    }

    /// Rents several machines for `hours` hours as one cluster (approving the total first);
    /// returns the cluster id and its rental ids.
    pub async fn rent_cluster(
        &self,
        machine_ids: &[U256],
        hours: u64,
    ) -> Result<Sent<(U256, Vec<U256>)>, Error> {
        let mut total = U256::ZERO;
        for id in machine_ids {
            let price = self.machine(*id).await?.pricePerHour;
            total = price
                .checked_mul(U256::from(hours))
                .and_then(|c| total.checked_add(c))
                .ok_or(Error::InvalidArgument {
                    name: "hours",
                    reason: "cluster cost overflows".into(),
                })?;
        }
        self.ensure_allowance(self.deployment.compute_marketplace, total)
            .await?;
        let data = self
            .market()
            .rentCluster(machine_ids.to_vec(), U256::from(hours))
            .calldata()
            .clone();
        let receipt = self
            .send("rentCluster", self.deployment.compute_marketplace, data)
            .await?;
        let ev: ComputeMarketplace::ClusterFormed =
            event(&receipt, self.deployment.compute_marketplace, "rentCluster")?;
        Ok(Sent {
            value: (ev.clusterId, ev.rentalIds),
            receipt,
        })
    }

    /// Ends a rental now; returns the refund.
    pub async fn end_rental(&self, rental_id: U256) -> Result<Sent<U256>, Error> {
        let data = self.market().endRental(rental_id).calldata().clone();
        let receipt = self
            .send("endRental", self.deployment.compute_marketplace, data)
            .await?;
        let ev: ComputeMarketplace::RentalEnded =
            event(&receipt, self.deployment.compute_marketplace, "endRental")?;
        Ok(Sent {
            value: ev.refund,
            receipt,
        })
    }

    /// Withdraws a rental's accrued rent; returns the amount.
    pub async fn withdraw(&self, rental_id: U256) -> Result<Sent<U256>, Error> {
        let data = self.market().withdraw(rental_id).calldata().clone();
        let receipt = self
            .send("withdraw", self.deployment.compute_marketplace, data)
            .await?;
        let ev: ComputeMarketplace::RentWithdrawn =
            event(&receipt, self.deployment.compute_marketplace, "withdraw")?;
        Ok(Sent {
            value: ev.amount,
            receipt,
        })
    }

    /// Withdraws the accrued rent of several rentals; returns the total.
    pub async fn withdraw_many(&self, rental_ids: &[U256]) -> Result<Sent<U256>, Error> {
        let data = self
            .market()
            .withdrawMany(rental_ids.to_vec())
            .calldata()
            .clone();
        let receipt = self
            .send("withdrawMany", self.deployment.compute_marketplace, data)
            .await?;
        let total = events::<ComputeMarketplace::RentWithdrawn>(
            &receipt,
            self.deployment.compute_marketplace,
        )
        .into_iter()
        .fold(U256::ZERO, |acc, e| acc + e.amount);
        Ok(Sent {
            value: total,
            receipt,
        })
    }

    /// A machine by id.
    pub async fn machine(&self, machine_id: U256) -> Result<Machine, Error> {
        let m = self.market();
        self.read("getMachine", m.getMachine(machine_id)).await
    }

    /// Every machine ever listed, with its id (listed or not; check `listed`).
    pub async fn machines(&self) -> Result<Vec<(U256, Machine)>, Error> {
        const PAGE: u64 = 100;
        let count = self.machine_count().await?;
        let m = self.market();
        let mut out = Vec::new();
        let mut from = 1u64;
        while U256::from(from) <= count {
            let page = self
                .read(
                    "getMachines",
                    m.getMachines(U256::from(from), U256::from(PAGE)),
                )
                .await?;
            if page.is_empty() {
                break;
            }
            for (i, machine) in page.into_iter().enumerate() {
                out.push((U256::from(from + i as u64), machine));
            }
            from += PAGE;
        }
        Ok(out)
    }

    /// Number of machines ever listed.
    pub async fn machine_count(&self) -> Result<U256, Error> {
        let m = self.market();
        self.read("machineCount", m.machineCount()).await
    }

    /// Number of rentals ever made.
    pub async fn rental_count(&self) -> Result<U256, Error> {
        let m = self.market();
        self.read("rentalCount", m.rentalCount()).await
    }

    /// A rental by id.
    pub async fn rental(&self, rental_id: U256) -> Result<Rental, Error> {
        let m = self.market();
        self.read("getRental", m.getRental(rental_id)).await
    }

    /// Whether a rental is active now.
    pub async fn is_rental_active(&self, rental_id: U256) -> Result<bool, Error> {
        let m = self.market();
        self.read("isRentalActive", m.isRentalActive(rental_id))
            .await
    }

    /// Rent the provider could withdraw now.
    pub async fn withdrawable(&self, rental_id: U256) -> Result<U256, Error> {
        let m = self.market();
        self.read("withdrawable", m.withdrawable(rental_id)).await
    }

    /// A cluster's renter, rentals and machines.
    pub async fn cluster(&self, cluster_id: U256) -> Result<Cluster, Error> {
        let m = self.market();
        let r = self.read("getCluster", m.getCluster(cluster_id)).await?;
        Ok(Cluster {
            renter: r.renter,
            rental_ids: r.rentalIds,
            machine_ids: r.machineIds,
        })
    }

    /// A cluster's renter (the zero address when there is no such cluster).
    pub async fn cluster_renter(&self, cluster_id: U256) -> Result<Address, Error> {
        let m = self.market();
        self.read("clusterRenter", m.clusterRenter(cluster_id))
            .await
    }

    /// A cluster's machines with PeerIds, multiaddrs and whether each rental is active (what
    /// the mesh checks before admitting a peer to the cluster subnet).
    pub async fn cluster_members(&self, cluster_id: U256) -> Result<Vec<ClusterMember>, Error> {
        let m = self.market();
        self.read("getClusterMembers", m.getClusterMembers(cluster_id))
            .await
    }

    // ------------------------------------------------------------------ training pool

    /// Registers the caller as a coordinator with `peer_id` (approving the stake first).
    pub async fn register_coordinator(&self, peer_id: Vec<u8>) -> Result<Sent<()>, Error> {
        let stake = self.min_stake().await?;
        self.ensure_allowance(self.deployment.training_pool, stake)
            .await?;
        let data = self
            .pool()
            .registerCoordinator(peer_id.into())
            .calldata()
            .clone();
        let receipt = self
            .send("registerCoordinator", self.deployment.training_pool, data)
            .await?;
        Ok(Sent { value: (), receipt })
    }

    /// Unregisters the caller; returns the stake paid back.
    pub async fn unregister_coordinator(&self) -> Result<Sent<U256>, Error> {
        let data = self.pool().unregisterCoordinator().calldata().clone();
        let receipt = self
            .send("unregisterCoordinator", self.deployment.training_pool, data)
            .await?;
        let ev: TrainingPool::CoordinatorUnregistered = event(
            &receipt,
            self.deployment.training_pool,
            "unregisterCoordinator",
        )?;
        Ok(Sent {
            value: ev.stake,
            receipt,
        })
    }

    /// Creates a training job (approving the pool first); returns its id.
    pub async fn create_training_job(&self, spec: JobSpec) -> Result<Sent<U256>, Error> {
        self.ensure_allowance(self.deployment.training_pool, spec.totalRewardPool)
            .await?;
        let data = self.pool().createTrainingJob(spec).calldata().clone();
        let receipt = self
            .send("createTrainingJob", self.deployment.training_pool, data)
            .await?;
        let ev: TrainingPool::TrainingJobCreated =
            event(&receipt, self.deployment.training_pool, "createTrainingJob")?;
        Ok(Sent {
            value: ev.jobId,
            receipt,
        })
    }

    /// Claims the job's next coordinator term; returns the term number.
    pub async fn claim_term(&self, job_id: U256) -> Result<Sent<u64>, Error> {
        let data = self.pool().claimTerm(job_id).calldata().clone();
        let receipt = self
            .send("claimTerm", self.deployment.training_pool, data)
            .await?;
        let ev: TrainingPool::TermClaimed =
            event(&receipt, self.deployment.training_pool, "claimTerm")?;
        Ok(Sent {
            value: ev.term,
            receipt,
        })
    }

    /// Keeps the caller's term lease alive.
    pub async fn renew_lease(&self, job_id: U256) -> Result<Sent<()>, Error> {
        let data = self.pool().renewLease(job_id).calldata().clone();
        let receipt = self
            .send("renewLease", self.deployment.training_pool, data)
            .await?;
        Ok(Sent { value: (), receipt })
    }

    /// Records a round's global model hash and accuracy.
    pub async fn record_round(
        &self,
        job_id: U256,
        round: u64,
        global_model_hash: B256,
        accuracy_bps: u16,
    ) -> Result<Sent<()>, Error> {
        let data = self
            .pool()
            .recordRound(job_id, round, global_model_hash, accuracy_bps)
            .calldata()
            .clone();
        let receipt = self
            .send("recordRound", self.deployment.training_pool, data)
            .await?;
        Ok(Sent { value: (), receipt })
    }

    /// Submits an attested update for the caller; returns the reward paid.
    pub async fn submit_update(
        &self,
        job_id: U256,
        round: u64,
        update_hash: B256,
        accuracy_bps: u16,
        term: u64,
        signature: Bytes,
    ) -> Result<Sent<U256>, Error> {
        let data = self
            .pool()
            .submitUpdate(job_id, round, update_hash, accuracy_bps, term, signature)
            .calldata()
            .clone();
        let receipt = self
            .send("submitUpdate", self.deployment.training_pool, data)
            .await?;
        let ev: TrainingPool::RewardDistributed =
            event(&receipt, self.deployment.training_pool, "submitUpdate")?;
        Ok(Sent {
            value: ev.amount,
            receipt,
        })
    }

    /// Whether the contract would accept this attestation for `contributor` now (threshold,
    /// current term, holder's signature; replays are not checked).
    #[allow(clippy::too_many_arguments)]
    pub async fn verify_proof(
        &self,
        job_id: U256,
        round: u64,
        update_hash: B256,
        contributor: Address,
        accuracy_bps: u16,
        term: u64,
        signature: Bytes,
    ) -> Result<bool, Error> {
        let p = self.pool();
        self.read(
            "verifyProof",
            p.verifyProof(
                job_id,
                round,
                update_hash,
                contributor,
                accuracy_bps,
                term,
                signature.clone(),
            ),
        )
        .await
    }

    /// The contract's EIP-712 digest of an attestation (for cross-checking [`attest`]).
    pub async fn attestation_digest(&self, a: &attest::Attestation) -> Result<B256, Error> {
        let p = self.pool();
        self.read(
            "attestationDigest",
            p.attestationDigest(
                a.jobId,
                a.round,
                a.updateHash,
                a.contributor,
                a.accuracyBps,
                a.term,
            ),
        )
        .await
    }

    /// Finishes a job and refunds the unspent pool to its requester; returns the refund.
    pub async fn finish_job(&self, job_id: U256) -> Result<Sent<U256>, Error> {
        let data = self.pool().finishJob(job_id).calldata().clone();
        let receipt = self
            .send("finishJob", self.deployment.training_pool, data)
            .await?;
        let ev: TrainingPool::TrainingJobFinished =
            event(&receipt, self.deployment.training_pool, "finishJob")?;
        Ok(Sent {
            value: ev.refund,
            receipt,
        })
    }

    /// A job by id.
    pub async fn job(&self, job_id: U256) -> Result<Job, Error> {
        let p = self.pool();
        self.read("getJob", p.getJob(job_id)).await
    }

    /// Number of training jobs ever created.
    pub async fn job_count(&self) -> Result<U256, Error> {
        let p = self.pool();
        self.read("jobCount", p.jobCount()).await
    }

    /// The job's current term.
    pub async fn current_term(&self, job_id: U256) -> Result<TermInfo, Error> {
        let p = self.pool();
        let r = self.read("currentTerm", p.currentTerm(job_id)).await?;
        Ok(TermInfo {
            term: r.term,
            holder: r.holder,
            last_activity: r.lastActivity,
            lease_seconds: r.leaseSeconds,
            live: r.live,
        })
    }

    /// What was recorded for a round.
    pub async fn round(&self, job_id: U256, round: u64) -> Result<RoundRecord, Error> {
        let p = self.pool();
        self.read("getRound", p.getRound(job_id, round)).await
    }

    /// A coordinator's registration.
    pub async fn coordinator(&self, who: Address) -> Result<Coordinator, Error> {
        let p = self.pool();
        self.read("coordinator", p.coordinator(who)).await
    }

    /// The coordinator stake.
    pub async fn min_stake(&self) -> Result<U256, Error> {
        let p = self.pool();
        self.read("minStake", p.minStake()).await
    }

    // ------------------------------------------------------------------ inference pool

    /// Creates an inference job on the caller's cluster (approving `max_payment` first);
    /// returns its id.
    pub async fn create_inference_job(
        &self,
        model_hash: B256,
        input_hash: B256,
        cluster_id: U256,
        parts: u32,
        price_per_compute_second: U256,
        max_payment: U256,
    ) -> Result<Sent<U256>, Error> {
        self.ensure_allowance(self.deployment.inference_pool, max_payment)
            .await?;
        let data = self
            .inference()
            .createInferenceJob(
                model_hash,
                input_hash,
                cluster_id,
                parts,
                price_per_compute_second,
                max_payment,
            )
            .calldata()
            .clone();
        let receipt = self
            .send("createInferenceJob", self.deployment.inference_pool, data)
            .await?;
        let ev: InferencePool::InferenceJobCreated = event(
            &receipt,
            self.deployment.inference_pool,
            "createInferenceJob",
        )?;
        Ok(Sent {
            value: ev.jobId,
            receipt,
        })
    }

    /// Posts a part's result; returns the payment received (0 when the deposit is spent).
    pub async fn post_result(
        &self,
        job_id: U256,
        part: u32,
        result_hash: B256,
        compute_millis: u64,
    ) -> Result<Sent<U256>, Error> {
        let data = self
            .inference()
            .postResult(job_id, part, result_hash, compute_millis)
            .calldata()
            .clone();
        let receipt = self
            .send("postResult", self.deployment.inference_pool, data)
            .await?;
        let paid = events::<InferencePool::ComputePaid>(&receipt, self.deployment.inference_pool)
            .into_iter()
            .fold(U256::ZERO, |acc, e| acc + e.amount);
        Ok(Sent {
            value: paid,
            receipt,
        })
    }

    /// Finishes an inference job and refunds the rest; returns the refund.
    pub async fn finish_inference_job(&self, job_id: U256) -> Result<Sent<U256>, Error> {
        let data = self
            .inference()
            .finishInferenceJob(job_id)
            .calldata()
            .clone();
        let receipt = self
            .send("finishInferenceJob", self.deployment.inference_pool, data)
            .await?;
        let ev: InferencePool::InferenceJobFinished = event(
            &receipt,
            self.deployment.inference_pool,
            "finishInferenceJob",
        )?;
        Ok(Sent {
            value: ev.refund,
            receipt,
        })
    }

    /// An inference job by id.
    pub async fn inference_job(&self, job_id: U256) -> Result<InferenceJob, Error> {
        let i = self.inference();
        self.read("getInferenceJob", i.getInferenceJob(job_id))
            .await
    }

    /// A part's posted result.
    pub async fn inference_result(&self, job_id: U256, part: u32) -> Result<PartResult, Error> {
        let i = self.inference();
        self.read("getResult", i.getResult(job_id, part)).await
    }

    // ------------------------------------------------------------------ devnet controls

    /// Moves anvil's clock forward by `seconds` and mines a block (devnets only).
    pub async fn increase_time(&self, seconds: u64) -> Result<(), Error> {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_increaseTime".into(), (seconds,))
            .await
            .map_err(|e| Error::from_rpc("evm_increaseTime", e))?;
        self.mine().await
    }

    /// Mines one block (devnets only).
    pub async fn mine(&self) -> Result<(), Error> {
        let _: serde_json::Value = self
            .provider
            .raw_request("evm_mine".into(), ())
            .await
            .map_err(|e| Error::from_rpc("evm_mine", e))?;
        Ok(())
    }

    /// The latest block's timestamp.
    pub async fn block_timestamp(&self) -> Result<u64, Error> {
        let block = self
            .retry
            .run("eth_getBlockByNumber", || {
                self.provider
                    .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            })
            .await?
            .ok_or_else(|| Error::Decode {
                what: "latest block".into(),
                reason: "missing".into(),
            })?;
        Ok(block.header.timestamp)
    }
}

/// Default receipt wait when the network gives none.
pub const DEFAULT_RECEIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// The first `E` event `address` emitted in `receipt`.
fn event<E: SolEvent>(
    receipt: &TransactionReceipt,
    address: Address,
    op: &str,
) -> Result<E, Error> {
    events::<E>(receipt, address)
        .into_iter()
        .next()
        .ok_or_else(|| Error::MissingEvent {
            op: op.to_owned(),
            tx_hash: receipt.transaction_hash,
            event: E::SIGNATURE,
        })
}

/// Every `E` event `address` emitted in `receipt`.
fn events<E: SolEvent>(receipt: &TransactionReceipt, address: Address) -> Vec<E> {
    receipt
        .inner
        .logs()
        .iter()
        .filter(|l| l.address() == address)
        .filter_map(|l| E::decode_log_data(l.data()).ok())
        .collect()
}

/// Classifies a contract-call error (reverts decoded, transport errors retryable).
fn contract_error(op: &str, err: alloy::contract::Error) -> Error {
    match err {
        alloy::contract::Error::TransportError(e) => Error::from_rpc(op, e),
        other => Error::Decode {
            what: op.to_owned(),
            reason: other.to_string(),
        },
    }
}
