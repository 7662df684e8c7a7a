//! The contributor's side of the actor: follows the round heads of the jobs it can serve, trains
//! the global model on its local data (which never leaves the node: only the trained weights do,
//! as an update blob), offers the update to the job's coordinator and claims the reward on chain
//! with the coordinator's attestation. Drives one [`Participation`] per job.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    path::Path,
    sync::Arc,
    time::Duration,
};

use alloy::primitives::{Address, Bytes, U256};
use libp2p::PeerId;
use tokio::sync::oneshot;

use crate::{
    chain,
    hash::Hash32,
    learn::{self, Dataset, data::Split},
    mesh::message::{RpcRequest, RpcResponse},
    roles::{
        blobs::get_blob,
        coordinator::coordinator_peer,
        job::{self, MAX_WEIGHTS_BYTES},
        jobs::JobStatus,
        participation::{Action, Attestation, Input, Participation},
        runtime::{Done, RolesError, Runtime, Waiter},
        wire::{RoundHeadMsg, UpdateOffer, UpdateVerdict},
    },
    store::{Db, Tree},
};

/// Participations by job id.
pub const PARTICIPATIONS: Tree<Participation> = Tree::new("roles.contributor.jobs");

/// Time allowed for the coordinator to evaluate an offer.
const OFFER_TIMEOUT: Duration = Duration::from_secs(45);
/// Time allowed to fetch a global model.
const MODEL_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed to fetch a cluster job's training set.
const DATASET_FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// The contributor's state in the actor.
pub(crate) struct ContributorState {
    /// The node's own training data (`None`: a rented machine, which trains only on the shards
    /// of cluster jobs' training sets its coordinator assigns it).
    data: Option<Arc<Dataset>>,
    /// Cluster jobs: the shards the latest round head gives this machine.
    shards: BTreeMap<u64, (u32, Vec<u32>)>,
    /// The last training set decoded (cluster jobs), reused across rounds.
    training_set: SetCache,
    jobs: BTreeMap<u64, Participation>,
    /// Training waiting for the CPU: (job, round, model, coordinator peer hint).
    queue: VecDeque<(u64, u64, Hash32, Option<PeerId>)>,
    training: Option<(u64, u64)>,
    offers_in_flight: HashSet<(u64, u64)>,
    claims_in_flight: HashSet<(u64, u64)>,
    pending: Vec<(u64, Action)>,
    last_peer: BTreeMap<u64, PeerId>,
}

/// The last training set decoded, by blob id (shared with the training tasks).
type SetCache = Arc<std::sync::Mutex<Option<(Hash32, Arc<Dataset>)>>>;

/// What a contributor trains on.
enum TrainData {
    /// The node's own data.
    Local(Arc<Dataset>),
    /// Shards `which` of `count` of a cluster job's training set (blob `set`).
    Shards {
        set: Hash32,
        count: u32,
        which: Vec<u32>,
        cache: SetCache,
    },
}

impl std::fmt::Display for TrainData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(d) => write!(f, "{} local images", d.len()),
            Self::Shards {
                set, count, which, ..
            } => write!(f, "shards {which:?} of {count} of {}", set.short()),
        }
    }
}

impl TrainData {
    /// The images to train on (a training set is fetched from the cluster and decoded once).
    async fn load(
        self,
        mesh: &crate::mesh::Client,
        hint: Option<PeerId>,
    ) -> Result<Arc<Dataset>, String> {
        let (set, count, which, cache) = match self {
            Self::Local(d) => return Ok(d),
            Self::Shards {
                set,
                count,
                which,
                cache,
            } => (set, count, which, cache),
        };
        let cached = cache.lock().ok().and_then(|c| {
            c.as_ref()
                .filter(|(h, _)| *h == set)
                .map(|(_, d)| d.clone())
        });
        let full = match cached {
            Some(d) => d,
            None => {
                let bytes = get_blob(
                    mesh,
                    set,
                    hint.into_iter().collect(),
                    job::MAX_DATASET_BYTES,
                    DATASET_FETCH_TIMEOUT,
                )
                .await
                .map_err(|e| e.to_string())?;
                let d = tokio::task::spawn_blocking(move || job::decode_dataset(&bytes))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                let d = Arc::new(d);
                if let Ok(mut c) = cache.lock() {
                    *c = Some((set, d.clone()));
                }
                d
            }
        };
        let which: Vec<usize> = which.iter().map(|s| *s as usize).collect();
        let part = full
            .shards(&which, count as usize)
            .map_err(|e| e.to_string())?;
        if part.is_empty() {
            return Err("the assigned shards hold no image".into());
        }
        Ok(Arc::new(part))
    }
}

/// Completions of the contributor's spawned work.
#[derive(Debug)]
pub(crate) enum ContribDone {
    /// Local training finished and the update is stored as a blob.
    Trained {
        job_id: u64,
        round: u64,
        result: Result<(Hash32, u64), String>,
    },
    /// The coordinator answered an offer (or could not be reached).
    Verdict {
        job_id: u64,
        round: u64,
        update: Hash32,
        result: Result<UpdateVerdict, String>,
    },
    /// The reward transaction finished.
    Claimed {
        job_id: u64,
        round: u64,
        result: Result<String, chain::Error>,
    },
}

impl ContributorState {
    /// Loads the local training data and the persisted participations.
    pub(crate) fn open(dir: &Path, db: &Db) -> Result<Self, RolesError> {
        let data = Dataset::load_dir(dir, Split::Train).map_err(|e| RolesError::Data {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        if data.is_empty() {
            return Err(RolesError::Data {
                dir: dir.to_path_buf(),
                reason: "no training images".into(),
            });
        }
        tracing::info!(target: "roles::contributor", samples = data.len(), dir = %dir.display(), "training data loaded");
        let jobs = Self::stored(db)?;
        Ok(Self::with(Some(Arc::new(data)), jobs))
    }

    /// A rented machine's state: no data of its own.
    pub(crate) fn worker(db: &Db) -> Result<Self, RolesError> {
        Ok(Self::with(None, Self::stored(db)?))
    }

    fn stored(db: &Db) -> Result<BTreeMap<u64, Participation>, RolesError> {
        Ok(db
            .scan(PARTICIPATIONS, b"")?
            .into_iter()
            .filter_map(|(k, p)| Some((u64::from_be_bytes(k.as_slice().try_into().ok()?), p)))
            .collect())
    }

    fn with(data: Option<Arc<Dataset>>, jobs: BTreeMap<u64, Participation>) -> Self {
        Self {
            data,
            shards: BTreeMap::new(),
            training_set: Arc::default(),
            jobs,
            queue: VecDeque::new(),
            training: None,
            offers_in_flight: HashSet::new(),
            claims_in_flight: HashSet::new(),
            pending: Vec::new(),
            last_peer: BTreeMap::new(),
        }
    }

    /// Queues the actions that redo what was in progress when the node stopped.
    pub(crate) fn resume_all(&mut self) {
        for (job_id, p) in &self.jobs {
            for action in p.resume() {
                self.pending.push((*job_id, action));
            }
        }
    }
}

impl Runtime {
    /// Executes the actions queued by [`ContributorState::resume_all`].
    pub(crate) fn contributor_resume(&mut self) {
        let pending = match self.contributor.as_mut() {
            Some(c) => std::mem::take(&mut c.pending),
            None => return,
        };
        for (job_id, action) in pending {
            self.contributor_execute(job_id, vec![action]);
        }
    }

    /// Whether this node may train for a job: open jobs on its own data, cluster jobs as a
    /// member of the cluster (on its own data, or on the job's training set).
    fn may_contribute(&self, job_id: u64) -> bool {
        let own_data = self.contributor.as_ref().is_some_and(|c| c.data.is_some());
        let training_set = self
            .assets(job_id)
            .is_some_and(|a| a.spec.dataset.is_some());
        self.jobs.get(&job_id).is_some_and(|r| {
            r.status == JobStatus::Open
                && if r.cluster_id == 0 {
                    own_data
                } else {
                    self.may_contribute_cluster(r.cluster_id) && (own_data || training_set)
                }
        })
    }

    /// Whether this node trains for a cluster job: only as a member of the cluster
    /// ([`super::subnet`]).
    pub(crate) fn may_contribute_cluster(&self, cluster_id: u64) -> bool {
        self.cluster_is_member(cluster_id)
    }

    pub(crate) fn contributor_on_head(&mut self, source: PeerId, msg: RoundHeadMsg) {
        if self.contributor.is_none() || !self.may_contribute(msg.job_id) {
            return;
        }
        if self.assets(msg.job_id).is_none() {
            tracing::debug!(target: "roles::contributor", job_id = msg.job_id, "round head before the job's assets are loaded");
            return;
        }
        let job_id = msg.job_id;
        tracing::debug!(target: "roles::contributor", job_id, head = ?msg.head, "round head");
        let cluster_training = self
            .assets(job_id)
            .is_some_and(|a| a.spec.dataset.is_some());
        if cluster_training {
            // Train only on what the coordinator assigns this machine, when it assigns any.
            let me = self.ctx.peer().to_bytes();
            let Some(plan) = msg.shards.as_ref() else {
                return;
            };
            let mine = plan.shards_of(&me);
            if let Some(c) = self.contributor.as_mut() {
                if mine.is_empty() {
                    c.shards.remove(&job_id);
                    return;
                }
                c.shards.insert(job_id, (plan.shards, mine));
            }
        }
        let actions = match self.contributor.as_mut() {
            Some(c) => {
                c.last_peer.insert(job_id, source);
                c.jobs
                    .entry(job_id)
                    .or_default()
                    .handle(Input::Head(msg.head))
            }
            None => return,
        };
        self.contributor_execute(job_id, actions);
    }

    pub(crate) fn contributor_on_job_changed(&mut self, job_id: u64) {
        let finished = self
            .jobs
            .get(&job_id)
            .is_none_or(|r| r.status == JobStatus::Finished);
        if let Some(c) = self.contributor.as_mut()
            && finished
        {
            c.queue.retain(|(j, ..)| *j != job_id);
        }
    }

    pub(crate) fn contributor_tick(&mut self) {
        // Work whose job assets are still loading (as just after a restart) waits for a later
        // tick instead of being dropped.
        let mut waiting = Vec::new();
        self.contributor_start_next(&mut waiting);
        if let Some(c) = self.contributor.as_mut() {
            for item in waiting.into_iter().rev() {
                c.queue.push_front(item);
            }
        }
    }

    fn contributor_start_next(&mut self, waiting: &mut Vec<(u64, u64, Hash32, Option<PeerId>)>) {
        loop {
            let Some(c) = self.contributor.as_mut() else {
                return;
            };
            if c.training.is_some() {
                return;
            }
            let Some((job_id, round, model, hint)) = c.queue.pop_front() else {
                return;
            };
            // Skip work the job has moved past while it waited.
            let current = c
                .jobs
                .get(&job_id)
                .and_then(|p| p.work.as_ref())
                .is_some_and(|w| w.round == round);
            if !current {
                continue;
            }
            let Some(assets) = self.assets(job_id) else {
                waiting.push((job_id, round, model, hint));
                continue;
            };
            let Some(c) = self.contributor.as_mut() else {
                return;
            };
            let source = match (assets.spec.dataset, c.data.clone()) {
                (Some(set), _) => match c.shards.get(&job_id) {
                    Some((count, which)) => TrainData::Shards {
                        set,
                        count: *count,
                        which: which.clone(),
                        cache: c.training_set.clone(),
                    },
                    None => continue, // no shard for this machine this round
                },
                (None, Some(local)) => TrainData::Local(local),
                (None, None) => continue,
            };
            c.training = Some((job_id, round));
            let mesh = self.ctx.mesh.clone();
            let done = self.done_tx.clone();
            let me = self.ctx.eth();
            tracing::info!(target: "roles::contributor", job_id, round, data = %source, "training");
            tokio::spawn(async move {
                let result = async {
                    let data = source.load(&mesh, hint).await?;
                    train(&mesh, &assets.spec, data, model, hint, job_id, round, me).await
                }
                .await;
                let _ = done
                    .send(Done::Contributor(ContribDone::Trained {
                        job_id,
                        round,
                        result,
                    }))
                    .await;
            });
            return;
        }
    }

    pub(crate) fn on_contributor_done(&mut self, d: ContribDone) {
        let (job_id, input) = match d {
            ContribDone::Trained {
                job_id,
                round,
                result,
            } => {
                if let Some(c) = self.contributor.as_mut() {
                    c.training = None;
                }
                match result {
                    Ok((update, samples)) => {
                        tracing::info!(target: "roles::contributor", job_id, round, update = %update.short(), "update ready");
                        (
                            job_id,
                            Input::Trained {
                                round,
                                update,
                                samples,
                            },
                        )
                    }
                    Err(e) => {
                        tracing::warn!(target: "roles::contributor", job_id, round, error = %e, "training failed");
                        return;
                    }
                }
            }
            ContribDone::Verdict {
                job_id,
                round,
                update,
                result,
            } => {
                if let Some(c) = self.contributor.as_mut() {
                    c.offers_in_flight.remove(&(job_id, round));
                }
                let input = match result {
                    Ok(UpdateVerdict::Attested {
                        round: r,
                        update: u,
                        accuracy_bps,
                        term,
                        signature,
                    }) if r == round && u == update => {
                        tracing::info!(target: "roles::contributor", job_id, round, accuracy = f64::from(accuracy_bps) / 100.0, "update accepted");
                        Input::Verdict {
                            round,
                            update,
                            verdict: Ok(Attestation {
                                accuracy_bps,
                                term,
                                signature,
                            }),
                        }
                    }
                    Ok(UpdateVerdict::Attested { .. }) => Input::Verdict {
                        round,
                        update,
                        verdict: Err("attestation for another update".into()),
                    },
                    Ok(UpdateVerdict::Rejected { reason }) => {
                        if is_transient_rejection(&reason) {
                            tracing::debug!(target: "roles::contributor", job_id, round, %reason, "offer not taken yet");
                            Input::OfferFailed { round }
                        } else {
                            tracing::warn!(target: "roles::contributor", job_id, round, %reason, "update rejected");
                            Input::Verdict {
                                round,
                                update,
                                verdict: Err(reason),
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(target: "roles::contributor", job_id, round, error = %e, "offer failed; will retry");
                        Input::OfferFailed { round }
                    }
                };
                (job_id, input)
            }
            ContribDone::Claimed {
                job_id,
                round,
                result,
            } => {
                if let Some(c) = self.contributor.as_mut() {
                    c.claims_in_flight.remove(&(job_id, round));
                }
                let input = match result {
                    Ok(amount) => {
                        tracing::info!(target: "roles::contributor", job_id, round, reward = %amount, "reward received");
                        Input::ClaimDone { round }
                    }
                    Err(e) if already_paid(&e) => Input::ClaimDone { round },
                    Err(e) => {
                        let stale_term = is_stale_term(&e);
                        tracing::warn!(target: "roles::contributor", job_id, round, error = %e, stale_term, "reward claim failed");
                        Input::ClaimFailed { round, stale_term }
                    }
                };
                (job_id, input)
            }
        };
        let actions = match self.contributor.as_mut() {
            Some(c) => c.jobs.entry(job_id).or_default().handle(input),
            None => return,
        };
        self.contributor_execute(job_id, actions);
    }

    fn contributor_execute(&mut self, job_id: u64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Train { round, model } => {
                    let Some(c) = self.contributor.as_mut() else {
                        return;
                    };
                    let hint = c.last_peer.get(&job_id).copied();
                    c.queue.retain(|(j, ..)| *j != job_id);
                    c.queue.push_back((job_id, round, model, hint));
                }
                Action::Offer {
                    round,
                    update,
                    samples,
                    term,
                } => self.send_offer(job_id, round, update, samples, term),
                Action::Claim {
                    round,
                    update,
                    attestation,
                } => self.send_claim(job_id, round, update, attestation),
            }
        }
        self.contributor_tick();
        self.persist_participation(job_id);
    }

    fn send_offer(&mut self, job_id: u64, round: u64, update: Hash32, samples: u64, term: u64) {
        let Some(record) = self.jobs.get(&job_id) else {
            return;
        };
        if record.term != term {
            return; // the next head (of the term our watcher knows) retries
        }
        let holder = Address::from(record.holder);
        let Some(peer) =
            coordinator_peer(&self.coordinators, self.ctx.eth(), self.ctx.peer(), holder)
        else {
            return;
        };
        let Some(c) = self.contributor.as_mut() else {
            return;
        };
        if !c.offers_in_flight.insert((job_id, round)) {
            return;
        }
        let offer = UpdateOffer {
            job_id,
            round,
            update,
            samples,
            contributor: self.ctx.eth().into_array(),
        };
        let done = self.done_tx.clone();
        if peer == self.ctx.peer() {
            // This node coordinates the job too: offer to itself.
            let (tx, rx) = oneshot::channel();
            self.on_offer(None, offer, Waiter::Local(tx));
            tokio::spawn(async move {
                let result = match tokio::time::timeout(OFFER_TIMEOUT, rx).await {
                    Ok(Ok(v)) => Ok(v),
                    _ => Err("no verdict".to_owned()),
                };
                let _ = done
                    .send(Done::Contributor(ContribDone::Verdict {
                        job_id,
                        round,
                        update,
                        result,
                    }))
                    .await;
            });
            return;
        }
        let mesh = self.ctx.mesh.clone();
        tracing::debug!(target: "roles::contributor", job_id, round, peer_id = %peer, "offering update");
        tokio::spawn(async move {
            let result = match tokio::time::timeout(
                OFFER_TIMEOUT,
                mesh.request(peer, RpcRequest::OfferUpdate(offer)),
            )
            .await
            {
                Ok(Ok(RpcResponse::UpdateVerdict(v))) => match v.validate() {
                    Ok(()) => Ok(v),
                    Err(e) => Err(e.to_string()),
                },
                Ok(Ok(RpcResponse::Error(e))) => Err(e.message),
                Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("coordinator did not answer in time".into()),
            };
            let _ = done
                .send(Done::Contributor(ContribDone::Verdict {
                    job_id,
                    round,
                    update,
                    result,
                }))
                .await;
        });
    }

    fn send_claim(&mut self, job_id: u64, round: u64, update: Hash32, a: Attestation) {
        let Some(c) = self.contributor.as_mut() else {
            return;
        };
        if !c.claims_in_flight.insert((job_id, round)) {
            return;
        }
        let chain = self.ctx.chain.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = chain
                .submit_update(
                    U256::from(job_id),
                    round,
                    update.into(),
                    a.accuracy_bps,
                    a.term,
                    Bytes::from(a.signature),
                )
                .await
                .map(|s| chain::config::format_duck(s.value));
            let _ = done
                .send(Done::Contributor(ContribDone::Claimed {
                    job_id,
                    round,
                    result,
                }))
                .await;
        });
    }

    fn persist_participation(&self, job_id: u64) {
        let Some(p) = self.contributor.as_ref().and_then(|c| c.jobs.get(&job_id)) else {
            return;
        };
        if let Err(e) = self.ctx.db.put(PARTICIPATIONS, &job_id.to_be_bytes(), p) {
            tracing::warn!(target: "roles::contributor", job_id, error = %e, "cannot persist participation");
        }
    }
}

/// Rejections that mean "not now" rather than "bad update": the coordinator is not (yet) the
/// job's leader on this node's view, or the round moved on.
/// Rejections that a later try may not meet: the coordinator's chain view lags (it leads
/// before its watcher reports its own term, so it does not yet count itself in the job's
/// cluster).
fn is_transient_rejection(reason: &str) -> bool {
    reason.contains("does not coordinate")
        || reason.contains("unknown job")
        || reason.contains("is not a member of cluster")
}

fn already_paid(e: &chain::Error) -> bool {
    use crate::chain::bindings::TrainingPool as P;
    e.decode_revert::<P::TrainingPoolUpdateAlreadyRewarded>()
        .is_some()
        || e.decode_revert::<P::TrainingPoolContributorAlreadyRewarded>()
            .is_some()
}

fn is_stale_term(e: &chain::Error) -> bool {
    use crate::chain::bindings::TrainingPool as P;
    e.decode_revert::<P::TrainingPoolStaleTerm>().is_some()
        || e.decode_revert::<P::TrainingPoolInvalidSignature>()
            .is_some()
}

/// Fetches the round's model, trains it on the local data, and stores the result as a blob.
#[allow(clippy::too_many_arguments)]
async fn train(
    mesh: &crate::mesh::Client,
    spec: &job::TrainingJobSpec,
    data: Arc<Dataset>,
    model: Hash32,
    hint: Option<PeerId>,
    job_id: u64,
    round: u64,
    me: Address,
) -> Result<(Hash32, u64), String> {
    let bytes = get_blob(
        mesh,
        model,
        hint.into_iter().collect(),
        MAX_WEIGHTS_BYTES,
        MODEL_FETCH_TIMEOUT,
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut cfg = spec.train;
    // Contributors shuffle differently from each other and from round to round.
    let salt = u64::from_be_bytes(me.as_slice()[..8].try_into().unwrap_or([0; 8]));
    cfg.seed = cfg.seed ^ salt ^ (job_id << 32) ^ round;
    let model_spec = spec.model;
    let (update_bytes, samples) = tokio::task::spawn_blocking(move || {
        let global = job::decode_weights(&bytes).map_err(|e| e.to_string())?;
        let bar = learn::train::progress_bar(true);
        bar.set_message(format!("job {job_id} round {round}"));
        let (weights, report) =
            learn::train(&model_spec, &global, &data, &cfg, &bar).map_err(|e| e.to_string())?;
        bar.finish_and_clear();
        let bytes = weights.to_safetensors_bytes().map_err(|e| e.to_string())?;
        Ok::<_, String>((bytes, report.samples as u64))
    })
    .await
    .map_err(|e| e.to_string())??;
    let update = mesh
        .put_blob(update_bytes)
        .await
        .map_err(|e| e.to_string())?
        .id()
        .map_err(|e| e.to_string())?;
    Ok((update, samples))
}
