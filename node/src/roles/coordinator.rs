//! The coordinator's side of the actor: registration and heartbeats, the election decision per
//! job, claiming terms, and driving a [`RoundMachine`] per led job (evaluating offers,
//! aggregating rounds, recording them on chain, attesting accepted updates).

use std::{collections::HashMap, sync::Arc, time::Duration};

use alloy::primitives::{Address, U256};
use libp2p::PeerId;

use crate::{
    chain::{self, attest::Attestation},
    hash::Hash32,
    learn::{Weights, aggregate::ServerState},
    mesh::{message::GossipBody, topics::Topic},
    roles::{
        blobs::get_blob,
        election::{Decision, TermView},
        job::{self, MAX_WEIGHTS_BYTES},
        jobs::JobStatus,
        round::{Action, Input, Offer, RoundMachine, Verdict as RoundVerdict},
        runtime::{Done, JobAssets, Runtime, Waiter, WeightsById, key_of, now_ms, reply},
        wire::{Heartbeat, RoundHeadMsg, UpdateOffer, UpdateVerdict},
    },
    store::Tree,
};

/// Round machines of the jobs this node coordinates, by job id.
pub const MACHINES: Tree<PersistedLeader> = Tree::new("roles.coordinator.machines");

/// Rounds this node aggregated, by (job, round): which updates went in (for audits and tests).
pub const AGGREGATES: Tree<AggregateRecord> = Tree::new("roles.coordinator.aggregates");

/// A round this node aggregated.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AggregateRecord {
    /// The job.
    pub job_id: u64,
    /// The round.
    pub round: u64,
    /// The term it was aggregated in.
    pub term: u64,
    /// The accepted updates that went in.
    pub updates: Vec<Hash32>,
    /// The samples each was trained on (its FedAvg weight), in the same order.
    #[serde(default)]
    pub samples: Vec<u64>,
    /// The resulting model.
    pub model: Hash32,
    /// Its accuracy, basis points.
    pub accuracy_bps: u16,
    /// When it was aggregated (unix milliseconds; round durations are the differences).
    #[serde(default)]
    pub at_unix_ms: u64,
}

/// Wall-clock unix milliseconds (0 if the clock is before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Key of an aggregate record.
pub fn aggregate_key(job_id: u64, round: u64) -> Vec<u8> {
    [job_id.to_be_bytes(), round.to_be_bytes()].concat()
}

/// Time allowed to fetch an update or a model.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry delay of a failed round record.
const RECORD_RETRY_MS: u64 = 2_000;

/// What survives a restart of a leader.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PersistedLeader {
    /// The round machine.
    pub machine: RoundMachine,
    /// Server optimizer state (FedAdam/momentum buffers).
    pub server_m: Vec<f32>,
    /// Second moment.
    pub server_v: Vec<f32>,
    /// Rounds aggregated but not yet recorded on chain, in order.
    pub unrecorded: Vec<(u64, Hash32, u16)>,
}

/// A job this node coordinates.
pub(crate) struct Leader {
    machine: RoundMachine,
    assets: Arc<JobAssets>,
    global: Arc<Weights>,
    accepted: WeightsById,
    server: ServerState,
    waiters: HashMap<Hash32, Vec<Waiter>>,
    /// Who offered each update (fetch hint).
    offered_by: HashMap<Hash32, PeerId>,
    unrecorded: Vec<(u64, Hash32, u16)>,
    recording: bool,
    last_record_try_ms: u64,
    renewing: bool,
    last_renew_ms: u64,
    aggregating: bool,
}

/// Completions of the coordinator's spawned work.
#[derive(Debug)]
pub(crate) enum CoordDone {
    /// A term was claimed (or the claim failed).
    Claimed(u64, Result<u64, String>),
    /// A leader's start state is ready.
    LeaderReady(u64, Result<Box<LeaderStart>, String>),
    /// An offered update was evaluated.
    Evaluated {
        job_id: u64,
        term: u64,
        update: Hash32,
        result: Result<(Arc<Weights>, u16), String>,
    },
    /// A round was aggregated and its model stored as a blob.
    Aggregated {
        job_id: u64,
        term: u64,
        round: u64,
        updates: Vec<Hash32>,
        samples: Vec<u64>,
        result: Result<(Hash32, u16, Arc<Weights>, ServerState), String>,
    },
    /// A round record transaction finished.
    Recorded {
        job_id: u64,
        round: u64,
        result: Result<(), chain::Error>,
    },
    /// A lease renewal finished.
    Renewed(u64, Result<(), String>),
}

/// Everything needed to (re)start leading a job.
#[derive(Debug)]
pub(crate) struct LeaderStart {
    term: u64,
    assets: Arc<JobAssets>,
    global: Arc<Weights>,
    persisted: Option<PersistedLeader>,
    accepted: WeightsById,
    last_round: u64,
    last_model: Hash32,
    last_accuracy: Option<u16>,
}

impl Runtime {
    /// Registers this node as a coordinator on chain if it is not yet.
    pub(crate) fn ensure_registered(&mut self) {
        if self.registered || self.registering {
            return;
        }
        self.registering = true;
        let chain = self.ctx.chain.clone();
        let (me, peer) = (self.ctx.eth(), self.ctx.peer());
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let r = async {
                let c = chain.coordinator(me).await.map_err(|e| e.to_string())?;
                if c.registered {
                    if c.peerId.as_ref() != peer.to_bytes().as_slice() {
                        return Err(format!(
                            "{me:#x} is registered with another PeerId; unregister it or use another key"
                        ));
                    }
                    return Ok(());
                }
                chain.register_coordinator(peer.to_bytes()).await.map_err(|e| e.to_string())?;
                tracing::info!(target: "roles::coordinator", eth = %me, "registered as coordinator");
                Ok(())
            }
            .await;
            let _ = done.send(Done::Registered(r)).await;
        });
    }

    pub(crate) fn coordinator_tick(&mut self, now: u64) {
        if !self.registered {
            self.ensure_registered();
            return;
        }
        if now.saturating_sub(self.last_heartbeat_ms) >= self.ctx.config.heartbeat_ms {
            self.last_heartbeat_ms = now;
            self.heartbeat(now);
        }
        self.election.prune(now);
        let open: Vec<u64> = self
            .jobs
            .values()
            .filter(|r| r.status == JobStatus::Open)
            .map(|r| r.job_id)
            .collect();
        for job_id in open {
            self.decide(job_id, now);
        }
        for job_id in self.leaders.keys().copied().collect::<Vec<_>>() {
            let actions = match self.leaders.get_mut(&job_id) {
                Some(l) if !l.aggregating => l.machine.handle(Input::Tick, now),
                _ => Vec::new(),
            };
            self.execute(job_id, actions);
            self.record_pending(job_id, now);
            self.renew_if_due(job_id, now);
        }
    }

    fn heartbeat(&self, now: u64) {
        let hb = Heartbeat {
            eth: self.ctx.eth().into_array(),
            leading: self.leaders.keys().copied().collect(),
            sent_ms: now,
        };
        let mesh = self.ctx.mesh.clone();
        tokio::spawn(async move {
            if let Err(e) = mesh
                .publish(&Topic::Coordinators, &GossipBody::Heartbeat(hb))
                .await
            {
                tracing::trace!(target: "roles::coordinator", error = %e, "heartbeat not published");
            }
        });
    }

    /// Runs the election for a job and acts on it.
    fn decide(&mut self, job_id: u64, now: u64) {
        let Some(record) = self.jobs.get(&job_id) else {
            return;
        };
        if record.cluster_id != 0 && !self.may_coordinate_cluster(record.cluster_id) {
            return;
        }
        let Some(assets) = self.assets(job_id) else {
            return; // spec and validation set not here yet
        };
        let holder = Address::from(record.holder);
        let holder_peer = if record.term == 0 {
            None
        } else if holder == self.ctx.eth() {
            Some(self.ctx.peer())
        } else {
            self.coordinators.get(&holder).copied()
        };
        let lease_ms = record.lease_secs * 1000;
        let seen = self.activity_ms.get(&job_id).copied().unwrap_or(now);
        let view = TermView {
            term: record.term,
            holder: holder_peer.map(|p| key_of(&p)),
            lease_expired: record.term == 0 || now.saturating_sub(seen) > lease_ms,
        };
        let term = record.term;
        match self.election.decide(job_id, &view, now) {
            Decision::Lead => {
                let leading = self
                    .leaders
                    .get(&job_id)
                    .is_some_and(|l| l.machine.term() == term);
                if !leading && !self.claims_in_flight.contains(&job_id) {
                    self.claims_in_flight.insert(job_id);
                    self.spawn_prepare_leader(job_id, term, assets);
                }
            }
            Decision::Claim => {
                if self.claims_in_flight.insert(job_id) {
                    tracing::info!(target: "roles::coordinator", job_id, next_term = term + 1, "claiming term");
                    let chain = self.ctx.chain.clone();
                    let me = self.ctx.eth();
                    let done = self.done_tx.clone();
                    tokio::spawn(async move {
                        let r = claim(&chain, job_id, me).await;
                        let _ = done
                            .send(Done::Coordinator(CoordDone::Claimed(job_id, r)))
                            .await;
                    });
                }
            }
            Decision::WaitForLease | Decision::Follow(_) => {
                if self
                    .leaders
                    .get(&job_id)
                    .is_some_and(|l| l.machine.term() < term)
                {
                    self.leaders.remove(&job_id);
                }
            }
        }
    }

    /// Whether this node may coordinate a cluster job (the compute-rental roles decide).
    pub(crate) fn may_coordinate_cluster(&self, _cluster_id: u64) -> bool {
        true
    }

    fn spawn_prepare_leader(&self, job_id: u64, term: u64, assets: Arc<JobAssets>) {
        let chain = self.ctx.chain.clone();
        let mesh = self.ctx.mesh.clone();
        let db = self.ctx.db.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let r = prepare_leader(&chain, &mesh, &db, job_id, term, assets).await;
            let _ = done
                .send(Done::Coordinator(CoordDone::LeaderReady(
                    job_id,
                    r.map(Box::new),
                )))
                .await;
        });
    }

    pub(crate) fn on_coordinator_done(&mut self, d: CoordDone) {
        match d {
            CoordDone::Claimed(job_id, r) => {
                self.claims_in_flight.remove(&job_id);
                match r {
                    Ok(term) => {
                        tracing::info!(target: "roles::coordinator", job_id, term, "term claimed");
                        self.activity_ms.insert(job_id, now_ms());
                        if let Some(rec) = self.jobs.get_mut(&job_id)
                            && rec.term < term
                        {
                            rec.term = term;
                            rec.holder = self.ctx.eth().into_array();
                        }
                        if let Some(assets) = self.assets(job_id) {
                            self.claims_in_flight.insert(job_id);
                            self.spawn_prepare_leader(job_id, term, assets);
                        }
                    }
                    Err(e) => {
                        tracing::info!(target: "roles::coordinator", job_id, error = %e, "term not claimed")
                    }
                }
            }
            CoordDone::LeaderReady(job_id, r) => {
                self.claims_in_flight.remove(&job_id);
                match r {
                    Ok(start) => self.start_leader(job_id, *start),
                    Err(e) => {
                        tracing::warn!(target: "roles::coordinator", job_id, error = %e, "cannot start leading")
                    }
                }
            }
            CoordDone::Evaluated {
                job_id,
                term,
                update,
                result,
            } => {
                let Some(leader) = self
                    .leaders
                    .get_mut(&job_id)
                    .filter(|l| l.machine.term() == term)
                else {
                    return;
                };
                let result = match result {
                    Ok((weights, acc)) => {
                        leader.accepted.insert(update, weights);
                        Ok(acc)
                    }
                    Err(reason) => Err(reason),
                };
                let actions = leader
                    .machine
                    .handle(Input::Evaluated { update, result }, now_ms());
                self.execute(job_id, actions);
            }
            CoordDone::Aggregated {
                job_id,
                term,
                round,
                updates,
                samples,
                result,
            } => {
                if let Ok((model, accuracy_bps, _, _)) = &result {
                    let rec = AggregateRecord {
                        job_id,
                        round,
                        term,
                        updates,
                        samples,
                        model: *model,
                        accuracy_bps: *accuracy_bps,
                        at_unix_ms: unix_ms(),
                    };
                    if let Err(e) = self
                        .ctx
                        .db
                        .put(AGGREGATES, &aggregate_key(job_id, round), &rec)
                    {
                        tracing::warn!(target: "roles::coordinator", job_id, error = %e, "cannot record aggregate");
                    }
                }
                let Some(leader) = self
                    .leaders
                    .get_mut(&job_id)
                    .filter(|l| l.machine.term() == term)
                else {
                    return;
                };
                leader.aggregating = false;
                let input = match result {
                    Ok((model, accuracy_bps, weights, server)) => {
                        tracing::info!(
                            target: "roles::coordinator", job_id, round = leader.machine.round(), term,
                            model = %model.short(), accuracy = f64::from(accuracy_bps) / 100.0, "round aggregated"
                        );
                        leader.global = weights;
                        leader.server = server;
                        leader.accepted.clear();
                        leader.offered_by.clear();
                        Input::Aggregated {
                            model,
                            accuracy_bps,
                        }
                    }
                    Err(reason) => {
                        tracing::warn!(target: "roles::coordinator", job_id, %reason, "aggregation failed");
                        Input::AggregationFailed { reason }
                    }
                };
                let actions = leader.machine.handle(input, now_ms());
                self.execute(job_id, actions);
            }
            CoordDone::Recorded {
                job_id,
                round,
                result,
            } => {
                let Some(leader) = self.leaders.get_mut(&job_id) else {
                    return;
                };
                leader.recording = false;
                match result {
                    Ok(()) => {
                        leader.unrecorded.retain(|(r, _, _)| *r != round);
                        self.activity_ms.insert(job_id, now_ms());
                        self.persist_leader(job_id);
                        let finished = self.leaders.get(&job_id).is_some_and(|l| {
                            l.unrecorded.is_empty()
                                && *l.machine.phase() == super::round::Phase::Finished
                        });
                        if finished {
                            tracing::info!(target: "roles::coordinator", job_id, "job complete");
                            self.leaders.remove(&job_id);
                        }
                    }
                    Err(e) if is_fenced(&e) => {
                        tracing::warn!(target: "roles::coordinator", job_id, round, error = %e, "fenced off: another coordinator holds the job");
                        self.leaders.remove(&job_id);
                    }
                    Err(e) => {
                        tracing::warn!(target: "roles::coordinator", job_id, round, error = %e, "recordRound failed; will retry");
                    }
                }
            }
            CoordDone::Renewed(job_id, r) => {
                if let Some(l) = self.leaders.get_mut(&job_id) {
                    l.renewing = false;
                }
                match r {
                    Ok(()) => {
                        self.activity_ms.insert(job_id, now_ms());
                    }
                    Err(e) => {
                        tracing::warn!(target: "roles::coordinator", job_id, error = %e, "lease renewal failed")
                    }
                }
            }
        }
    }

    fn start_leader(&mut self, job_id: u64, start: LeaderStart) {
        let now = now_ms();
        let Some(record) = self.jobs.get(&job_id) else {
            return;
        };
        let config = start
            .assets
            .spec
            .round_config(record.rounds, record.min_accuracy_bps);
        let (machine, actions, server, unrecorded) = match start.persisted {
            Some(mut p) if p.machine.term() == start.term => {
                let actions = p.machine.resume(now);
                let server = ServerState {
                    m: p.server_m,
                    v: p.server_v,
                };
                (p.machine, actions, server, p.unrecorded)
            }
            _ => {
                let (m, a) = RoundMachine::start(
                    config,
                    start.term,
                    start.last_round,
                    start.last_model,
                    start.last_accuracy,
                    now,
                );
                (m, a, ServerState::default(), Vec::new())
            }
        };
        tracing::info!(target: "roles::coordinator", job_id, term = start.term, round = machine.round(), "leading job");
        self.leaders.insert(
            job_id,
            Leader {
                machine,
                assets: start.assets,
                global: start.global,
                accepted: start.accepted,
                server,
                waiters: HashMap::new(),
                offered_by: HashMap::new(),
                unrecorded,
                recording: false,
                last_record_try_ms: 0,
                renewing: false,
                last_renew_ms: now,
                aggregating: false,
            },
        );
        self.execute(job_id, actions);
        self.persist_leader(job_id);
    }

    /// An update offered to this node (over the mesh, or locally).
    pub(crate) fn on_offer(&mut self, peer: Option<PeerId>, offer: UpdateOffer, waiter: Waiter) {
        let job_id = offer.job_id;
        if !self.leaders.contains_key(&job_id) {
            let reason = match self.jobs.get(&job_id) {
                Some(r) => format!(
                    "this node does not coordinate job {job_id} (term {} holder {:#x})",
                    r.term,
                    Address::from(r.holder)
                ),
                None => format!("unknown job {job_id}"),
            };
            reply(&self.ctx.mesh, waiter, UpdateVerdict::rejected(reason));
            return;
        }
        if let Some(p) = peer
            && let Some(cluster_id) = self
                .jobs
                .get(&job_id)
                .map(|r| r.cluster_id)
                .filter(|c| *c != 0)
            && !self.cluster_admits(cluster_id, &p)
        {
            self.ctx.mesh.metrics().acl_refusal("cluster_offer");
            tracing::warn!(target: "mesh::acl", peer_id = %p, job_id, cluster_id, "offer from a peer outside the job's cluster refused");
            let reason = format!("peer is not a member of cluster {cluster_id}");
            reply(&self.ctx.mesh, waiter, UpdateVerdict::rejected(reason));
            return;
        }
        let Some(leader) = self.leaders.get_mut(&job_id) else {
            return;
        };
        if let Some(p) = peer {
            leader.offered_by.insert(offer.update, p);
        }
        leader.waiters.entry(offer.update).or_default().push(waiter);
        let input = Input::Offer {
            round: offer.round,
            offer: Offer {
                update: offer.update,
                contributor: offer.contributor,
                samples: offer.samples,
            },
        };
        let actions = leader.machine.handle(input, now_ms());
        self.execute(job_id, actions);
    }

    /// Carries out a round machine's actions for `job_id`, then persists it.
    fn execute(&mut self, job_id: u64, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        // A cluster round's plan, fed back once the actions are done.
        let mut planned = None;
        for action in actions {
            let Some(leader) = self.leaders.get_mut(&job_id) else {
                return;
            };
            match action {
                Action::PublishHead(head) => {
                    let shards = self.shard_plan(job_id);
                    if let (Some(plan), Some(round)) = (&shards, head.open_round) {
                        planned = Some((round, plan.clone()));
                    }
                    let msg = RoundHeadMsg {
                        job_id,
                        coordinator: self.ctx.eth().into_array(),
                        head,
                        shards,
                    };
                    let mesh = self.ctx.mesh.clone();
                    tokio::spawn(async move {
                        let Ok(topic) = Topic::job(job_id) else {
                            return;
                        };
                        if let Err(e) = mesh.publish(&topic, &GossipBody::RoundHead(msg)).await {
                            tracing::debug!(target: "roles::coordinator", job_id, error = %e, "round head not published");
                        }
                    });
                }
                Action::Evaluate(offer) => {
                    let hints: Vec<PeerId> = leader
                        .offered_by
                        .get(&offer.update)
                        .copied()
                        .into_iter()
                        .collect();
                    let (assets, global, term) = (
                        leader.assets.clone(),
                        leader.global.clone(),
                        leader.machine.term(),
                    );
                    let mesh = self.ctx.mesh.clone();
                    let done = self.done_tx.clone();
                    tokio::spawn(async move {
                        let result = evaluate(&mesh, &assets, global, offer.update, hints).await;
                        let _ = done
                            .send(Done::Coordinator(CoordDone::Evaluated {
                                job_id,
                                term,
                                update: offer.update,
                                result,
                            }))
                            .await;
                    });
                }
                Action::Reply {
                    update,
                    contributor,
                    verdict,
                } => {
                    let waiters = leader.waiters.remove(&update).unwrap_or_default();
                    let verdict = match verdict {
                        RoundVerdict::Attest {
                            accuracy_bps,
                            term,
                            round,
                        } => {
                            let a = Attestation::new(
                                U256::from(job_id),
                                round,
                                update.into(),
                                Address::from(contributor),
                                accuracy_bps,
                                term,
                            );
                            match a.sign(&self.ctx.signer, &self.ctx.chain.attestation_domain()) {
                                Ok(sig) => UpdateVerdict::Attested {
                                    round,
                                    update,
                                    accuracy_bps,
                                    term,
                                    signature: sig.to_vec(),
                                },
                                Err(e) => {
                                    UpdateVerdict::rejected(format!("coordinator cannot sign: {e}"))
                                }
                            }
                        }
                        RoundVerdict::Reject { reason } => {
                            leader.accepted.remove(&update);
                            UpdateVerdict::rejected(reason)
                        }
                    };
                    if let UpdateVerdict::Rejected { reason } = &verdict {
                        tracing::info!(target: "roles::coordinator", job_id, update = %update.short(), %reason, "update rejected");
                    }
                    for w in waiters {
                        reply(&self.ctx.mesh, w, verdict.clone());
                    }
                }
                Action::Aggregate { round, updates } => {
                    leader.aggregating = true;
                    let ids: Vec<Hash32> = updates.iter().map(|(o, _)| o.update).collect();
                    let samples: Vec<u64> = updates.iter().map(|(o, _)| o.samples).collect();
                    let weights: Result<Vec<(Arc<Weights>, u64)>, String> = updates
                        .iter()
                        .map(|(o, _)| {
                            leader
                                .accepted
                                .get(&o.update)
                                .map(|w| (w.clone(), o.samples))
                                .ok_or_else(|| {
                                    format!("accepted update {} is not loaded", o.update.short())
                                })
                        })
                        .collect();
                    let (assets, global, term) = (
                        leader.assets.clone(),
                        leader.global.clone(),
                        leader.machine.term(),
                    );
                    let mut server = leader.server.clone();
                    let mesh = self.ctx.mesh.clone();
                    let done = self.done_tx.clone();
                    tracing::debug!(target: "roles::coordinator", job_id, round, updates = updates.len(), "aggregating");
                    tokio::spawn(async move {
                        let result = async {
                            let weights = weights?;
                            let (result, server) = tokio::task::spawn_blocking(move || {
                                let refs: Vec<(&Weights, u64)> =
                                    weights.iter().map(|(w, n)| (w.as_ref(), *n)).collect();
                                let validation =
                                    assets.validation.as_deref().ok_or("no validation set")?;
                                job::aggregate_round(
                                    &assets.spec,
                                    &global,
                                    &refs,
                                    &mut server,
                                    validation,
                                )
                                .map(|r| (r, server))
                                .map_err(|e| e.to_string())
                            })
                            .await
                            .map_err(|e| e.to_string())??;
                            let model = mesh
                                .put_blob(result.bytes)
                                .await
                                .map_err(|e| e.to_string())?
                                .id()
                                .map_err(|e| e.to_string())?;
                            Ok::<_, String>((
                                model,
                                result.accuracy_bps,
                                Arc::new(result.weights),
                                server,
                            ))
                        }
                        .await;
                        let _ = done
                            .send(Done::Coordinator(CoordDone::Aggregated {
                                job_id,
                                term,
                                round,
                                updates: ids,
                                samples,
                                result,
                            }))
                            .await;
                    });
                }
                Action::RecordRound {
                    round,
                    model,
                    accuracy_bps,
                } => {
                    leader.unrecorded.push((round, model, accuracy_bps));
                    leader.last_record_try_ms = 0;
                }
                Action::Finished => {
                    tracing::info!(target: "roles::coordinator", job_id, "all rounds done");
                }
            }
        }
        self.record_pending(job_id, now_ms());
        self.persist_leader(job_id);
        if let Some((round, plan)) = planned
            && let Some(l) = self.leaders.get_mut(&job_id)
        {
            let by: Vec<Option<Vec<u8>>> = l
                .machine
                .live_offers()
                .map(|o| l.offered_by.get(&o.update).map(|p| p.to_bytes()))
                .collect();
            let expected = plan.expected_updates(by.iter().map(Option::as_deref));
            // Yields no head (at most the round's close), so this recursion ends here.
            let more = l
                .machine
                .handle(Input::Planned { round, expected }, now_ms());
            self.execute(job_id, more);
        }
    }

    /// Sends the oldest unrecorded round, one at a time, retrying failures.
    fn record_pending(&mut self, job_id: u64, now: u64) {
        let Some(leader) = self.leaders.get_mut(&job_id) else {
            return;
        };
        if leader.recording || now.saturating_sub(leader.last_record_try_ms) < RECORD_RETRY_MS {
            return;
        }
        let Some(&(round, model, acc)) = leader.unrecorded.first() else {
            return;
        };
        leader.recording = true;
        leader.last_record_try_ms = now;
        let chain = self.ctx.chain.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let mut result = chain
                .record_round(U256::from(job_id), round, model.into(), acc)
                .await
                .map(|_| ());
            // A retry after a lost receipt may find the round already recorded: that's success.
            if let Err(e) = &result
                && let Ok(r) = chain.round(U256::from(job_id), round).await
                && Hash32::from(r.globalModelHash) == model
            {
                tracing::debug!(target: "roles::coordinator", job_id, round, error = %e, "round was already recorded");
                result = Ok(());
            }
            let _ = done
                .send(Done::Coordinator(CoordDone::Recorded {
                    job_id,
                    round,
                    result,
                }))
                .await;
        });
    }

    /// Renews the lease when a third of it passed without chain activity.
    fn renew_if_due(&mut self, job_id: u64, now: u64) {
        let lease_ms = self.jobs.get(&job_id).map_or(0, |r| r.lease_secs * 1000);
        let seen = self.activity_ms.get(&job_id).copied().unwrap_or(0);
        let Some(leader) = self.leaders.get_mut(&job_id) else {
            return;
        };
        if leader.renewing || now.saturating_sub(seen.max(leader.last_renew_ms)) < lease_ms / 3 {
            return;
        }
        if *leader.machine.phase() == super::round::Phase::Finished {
            return;
        }
        leader.renewing = true;
        leader.last_renew_ms = now;
        let chain = self.ctx.chain.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let r = chain
                .renew_lease(U256::from(job_id))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            let _ = done
                .send(Done::Coordinator(CoordDone::Renewed(job_id, r)))
                .await;
        });
    }

    fn persist_leader(&self, job_id: u64) {
        let Some(l) = self.leaders.get(&job_id) else {
            return;
        };
        let p = PersistedLeader {
            machine: l.machine.clone(),
            server_m: l.server.m.clone(),
            server_v: l.server.v.clone(),
            unrecorded: l.unrecorded.clone(),
        };
        if let Err(e) = self.ctx.db.put(MACHINES, &job_id.to_be_bytes(), &p) {
            tracing::warn!(target: "roles::coordinator", job_id, error = %e, "cannot persist round machine");
        }
    }
}

/// Whether a chain error means another coordinator holds the job now.
fn is_fenced(e: &chain::Error) -> bool {
    use crate::chain::bindings::TrainingPool as P;
    e.decode_revert::<P::TrainingPoolNotTermHolder>().is_some()
        || e.decode_revert::<P::TrainingPoolJobOver>().is_some()
}

/// Claims the next term unless the current lease is still live.
async fn claim(chain: &chain::Client, job_id: u64, me: Address) -> Result<u64, String> {
    let t = chain
        .current_term(U256::from(job_id))
        .await
        .map_err(|e| e.to_string())?;
    if t.live && t.holder != me {
        return Err(format!(
            "lease of term {} held by {:#x} still live",
            t.term, t.holder
        ));
    }
    if t.live && t.holder == me {
        return Ok(t.term);
    }
    chain
        .claim_term(U256::from(job_id))
        .await
        .map(|s| s.value)
        .map_err(|e| e.to_string())
}

/// Loads what a leader needs: the chain's latest round, the global model's weights, and the
/// persisted machine of this term with its accepted updates.
async fn prepare_leader(
    chain: &chain::Client,
    mesh: &crate::mesh::Client,
    db: &crate::store::Db,
    job_id: u64,
    term: u64,
    assets: Arc<JobAssets>,
) -> Result<LeaderStart, String> {
    let job = chain
        .job(U256::from(job_id))
        .await
        .map_err(|e| e.to_string())?;
    if job.term != term {
        return Err(format!("term moved to {} meanwhile", job.term));
    }
    let (last_model, last_accuracy) = if job.lastRound == 0 {
        (Hash32::from(job.spec.modelHash), None)
    } else {
        let r = chain
            .round(U256::from(job_id), job.lastRound)
            .await
            .map_err(|e| e.to_string())?;
        (Hash32::from(r.globalModelHash), Some(r.accuracyBps))
    };
    let persisted: Option<PersistedLeader> = db
        .get(MACHINES, &job_id.to_be_bytes())
        .map_err(|e| e.to_string())?
        .filter(|p: &PersistedLeader| p.machine.term() == term);
    // A persisted machine of this term resumes from its own model; otherwise start from chain.
    let model = persisted.as_ref().map_or(last_model, |p| p.machine.model());
    let bytes = get_blob(mesh, model, Vec::new(), MAX_WEIGHTS_BYTES, FETCH_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let global = Arc::new(job::decode_weights(&bytes).map_err(|e| e.to_string())?);
    let mut accepted = WeightsById::new();
    if let Some(p) = &persisted {
        for (offer, _) in p.machine.accepted() {
            let bytes = get_blob(
                mesh,
                offer.update,
                Vec::new(),
                MAX_WEIGHTS_BYTES,
                FETCH_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_string())?;
            accepted.insert(
                offer.update,
                Arc::new(job::decode_weights(&bytes).map_err(|e| e.to_string())?),
            );
        }
    }
    Ok(LeaderStart {
        term,
        assets,
        global,
        persisted,
        accepted,
        last_round: job.lastRound,
        last_model,
        last_accuracy,
    })
}

/// Fetches an offered update and judges it on the job's validation set.
async fn evaluate(
    mesh: &crate::mesh::Client,
    assets: &Arc<JobAssets>,
    global: Arc<Weights>,
    update: Hash32,
    hints: Vec<PeerId>,
) -> Result<(Arc<Weights>, u16), String> {
    let bytes = get_blob(mesh, update, hints, MAX_WEIGHTS_BYTES, FETCH_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let assets = assets.clone();
    tokio::task::spawn_blocking(move || {
        let validation = assets.validation.as_deref().ok_or("no validation set")?;
        job::evaluate_update(&assets.spec, &global, &bytes, validation)
            .map(|(w, acc)| (Arc::new(w), acc))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The peer that coordinates a job's term, as far as this node knows.
pub(crate) fn coordinator_peer(
    coordinators: &HashMap<Address, PeerId>,
    me_eth: Address,
    me_peer: PeerId,
    holder: Address,
) -> Option<PeerId> {
    if holder == me_eth {
        Some(me_peer)
    } else {
        coordinators.get(&holder).copied()
    }
}
