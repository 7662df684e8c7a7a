//! The coordinator's round state machine for one job during one term.
//!
//! A round opens on the current global model; contributors offer updates; each is evaluated
//! (by the driver: fetch, validate, measure accuracy on the job's validation set) and accepted
//! or rejected; the round closes when `target_updates` were accepted, or at its deadline if at
//! least `quorum` were; then the driver aggregates, and the result is recorded on chain and
//! published as the next round head. In cluster training the driver also tells the machine how
//! many updates the round's shard plan can bring ([`Input::Planned`]): no round waits for more
//! updates than there are machines to send them.
//!
//! Pure logic: `handle(input, now_ms) -> Vec<Action>`; the driver in `roles::coordinator` does
//! the I/O and persists the machine (it is serde) after every step, so a restarted coordinator
//! resumes with [`RoundMachine::resume`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::Hash32;

/// An Ethereum address (20 bytes).
pub type Address = [u8; 20];

/// Most offers kept per round, whatever `target_updates` is (bounds memory per round).
pub const MAX_OFFERS_PER_ROUND: usize = 1024;

/// Per-job parameters of the round machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundConfig {
    /// Rounds in the job.
    pub total_rounds: u64,
    /// A round closes as soon as this many updates are accepted (K).
    pub target_updates: usize,
    /// At the deadline, a round closes if at least this many were accepted; else it is extended.
    pub quorum: usize,
    /// How long a round collects before its deadline.
    pub round_timeout_ms: u64,
    /// Updates measured below this accuracy (basis points) are rejected.
    pub min_accuracy_bps: u16,
    /// How often the open round's head is re-published (late joiners, lost gossip).
    pub republish_ms: u64,
}

/// An update offered by a contributor for the open round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The update's blob id (its weights as safetensors).
    pub update: Hash32,
    /// The contributor's chain address (paid by the attestation).
    pub contributor: Address,
    /// Training samples behind the update (the FedAvg weight).
    pub samples: u64,
}

/// Where an offered update stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OfferStatus {
    /// Handed to the driver for evaluation.
    Evaluating,
    /// Accepted at the measured accuracy.
    Accepted {
        /// Accuracy on the validation set, basis points.
        accuracy_bps: u16,
    },
    /// Rejected, with the reason sent to the contributor.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// The answer to a contributor about its update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Accepted: the driver signs an attestation of this accuracy for this term and round.
    Attest {
        /// Measured accuracy, basis points.
        accuracy_bps: u16,
        /// The term the attestation is signed in.
        term: u64,
        /// The round the update belongs to.
        round: u64,
    },
    /// Rejected, and why.
    Reject {
        /// Why.
        reason: String,
    },
}

/// The state of the job as announced on its topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Term of the coordinator announcing it.
    pub term: u64,
    /// Last completed round (0 before the first).
    pub completed_round: u64,
    /// The global model after `completed_round` (the initial weights for 0).
    pub model: Hash32,
    /// Its accuracy on the validation set, if measured.
    pub accuracy_bps: Option<u16>,
    /// The round now collecting updates, or `None` when the job is finished.
    pub open_round: Option<u64>,
    /// When the open round's deadline falls (unix ms).
    pub deadline_ms: u64,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Publish the head on the job's topic.
    PublishHead(Head),
    /// Fetch, validate and measure this update, then feed back [`Input::Evaluated`].
    Evaluate(Offer),
    /// Answer the contributor(s) waiting on this update.
    Reply {
        /// The update.
        update: Hash32,
        /// Its contributor.
        contributor: Address,
        /// The answer.
        verdict: Verdict,
    },
    /// Aggregate these accepted updates into the next global model, then feed back
    /// [`Input::Aggregated`] (or [`Input::AggregationFailed`]).
    Aggregate {
        /// The round being closed.
        round: u64,
        /// The accepted updates with their measured accuracy.
        updates: Vec<(Offer, u16)>,
    },
    /// Record the closed round on chain.
    RecordRound {
        /// The round.
        round: u64,
        /// The new global model.
        model: Hash32,
        /// Its accuracy, basis points.
        accuracy_bps: u16,
    },
    /// All rounds are done.
    Finished,
}

/// Events fed to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A contributor offers `offer` for `round`.
    Offer {
        /// The round the contributor trained for.
        round: u64,
        /// The update.
        offer: Offer,
    },
    /// The driver's evaluation of an update: accuracy in basis points, or why it is invalid.
    Evaluated {
        /// The update.
        update: Hash32,
        /// Accuracy or rejection reason.
        result: Result<u16, String>,
    },
    /// The driver aggregated the closed round.
    Aggregated {
        /// The new global model's blob id.
        model: Hash32,
        /// Its accuracy on the validation set.
        accuracy_bps: u16,
    },
    /// Aggregation failed (e.g. an accepted update's blob is gone); the round collects again.
    AggregationFailed {
        /// Why.
        reason: String,
    },
    /// The driver planned `round` (cluster training): it can bring at most `expected` updates
    /// ([`crate::roles::shards::ShardPlan::expected_updates`]), so it closes once that many are
    /// accepted (a plan never raises the job's target). Sent with every head, so a machine
    /// that leaves mid-round is no longer waited for once the head is re-planned without it.
    Planned {
        /// The round the plan is for.
        round: u64,
        /// Updates the plan can bring.
        expected: usize,
    },
    /// Time passed.
    Tick,
}

/// The round's phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Collecting updates until the deadline.
    Collecting {
        /// When the round may close on quorum (unix ms).
        deadline_ms: u64,
    },
    /// Waiting for the driver's aggregation.
    Aggregating,
    /// All rounds are done.
    Finished,
}

/// The coordinator's state for one job in one term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundMachine {
    config: RoundConfig,
    term: u64,
    /// The open round (1-based); `total_rounds + 1` once finished.
    round: u64,
    /// The model the open round trains from.
    model: Hash32,
    accuracy_bps: Option<u16>,
    phase: Phase,
    offers: BTreeMap<Hash32, (Offer, OfferStatus)>,
    last_head_ms: u64,
    /// Updates the open round's latest shard plan can bring (cluster training only).
    #[serde(default)]
    planned: Option<usize>,
}

impl RoundMachine {
    /// Starts a term: `last_round` rounds are already recorded on chain and `model` is the
    /// global model after them (the job's initial weights when 0).
    pub fn start(
        config: RoundConfig,
        term: u64,
        last_round: u64,
        model: Hash32,
        accuracy_bps: Option<u16>,
        now_ms: u64,
    ) -> (Self, Vec<Action>) {
        let mut m = Self {
            config,
            term,
            round: last_round + 1,
            model,
            accuracy_bps,
            phase: Phase::Aggregating,
            offers: BTreeMap::new(),
            last_head_ms: now_ms,
            planned: None,
        };
        let actions = if last_round >= m.config.total_rounds {
            m.round = m.config.total_rounds + 1;
            m.phase = Phase::Finished;
            vec![Action::PublishHead(m.head()), Action::Finished]
        } else {
            m.open(now_ms)
        };
        (m, actions)
    }

    /// The actions a restarted driver must redo for the persisted state.
    pub fn resume(&mut self, now_ms: u64) -> Vec<Action> {
        self.last_head_ms = now_ms;
        match &self.phase {
            Phase::Collecting { .. } => {
                let mut actions = vec![Action::PublishHead(self.head())];
                actions.extend(
                    self.offers
                        .values()
                        .filter(|(_, s)| *s == OfferStatus::Evaluating)
                        .map(|(o, _)| Action::Evaluate(o.clone())),
                );
                actions
            }
            Phase::Aggregating => vec![self.aggregate_action()],
            Phase::Finished => vec![Action::PublishHead(self.head()), Action::Finished],
        }
    }

    /// Feeds one input; returns what the driver must do, in order.
    pub fn handle(&mut self, input: Input, now_ms: u64) -> Vec<Action> {
        match input {
            Input::Offer { round, offer } => self.on_offer(round, offer),
            Input::Evaluated { update, result } => self.on_evaluated(update, result),
            Input::Aggregated {
                model,
                accuracy_bps,
            } => self.on_aggregated(model, accuracy_bps, now_ms),
            Input::AggregationFailed { .. } => {
                if self.phase != Phase::Aggregating {
                    return Vec::new();
                }
                // Keep accepted updates; collect again so the round can still close.
                self.phase = Phase::Collecting {
                    deadline_ms: now_ms + self.config.round_timeout_ms,
                };
                vec![Action::PublishHead(self.head())]
            }
            Input::Planned { round, expected } => self.on_planned(round, expected),
            Input::Tick => self.on_tick(now_ms),
        }
    }

    /// The term this machine runs in.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The open round (or `total_rounds + 1` when finished).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The global model the open round trains from.
    pub fn model(&self) -> Hash32 {
        self.model
    }

    /// The status of an offered update in the open round.
    pub fn offer_status(&self, update: &Hash32) -> Option<&OfferStatus> {
        self.offers.get(update).map(|(_, s)| s)
    }

    /// Offers of the open round not rejected (accepted or still being evaluated).
    pub fn live_offers(&self) -> impl Iterator<Item = &Offer> {
        self.offers
            .values()
            .filter(|(_, s)| !matches!(s, OfferStatus::Rejected { .. }))
            .map(|(o, _)| o)
    }

    /// Accepted updates of the open round.
    pub fn accepted(&self) -> Vec<(Offer, u16)> {
        self.offers
            .values()
            .filter_map(|(o, s)| match s {
                OfferStatus::Accepted { accuracy_bps } => Some((o.clone(), *accuracy_bps)),
                _ => None,
            })
            .collect()
    }

    /// The head to announce now.
    pub fn head(&self) -> Head {
        let finished = self.phase == Phase::Finished;
        Head {
            term: self.term,
            completed_round: self.round - 1,
            model: self.model,
            accuracy_bps: self.accuracy_bps,
            open_round: (!finished).then_some(self.round),
            deadline_ms: match self.phase {
                Phase::Collecting { deadline_ms } => deadline_ms,
                _ => 0,
            },
        }
    }

    fn open(&mut self, now_ms: u64) -> Vec<Action> {
        self.phase = Phase::Collecting {
            deadline_ms: now_ms + self.config.round_timeout_ms,
        };
        self.offers.clear();
        self.last_head_ms = now_ms;
        self.planned = None;
        vec![Action::PublishHead(self.head())]
    }

    fn reject(offer: &Offer, reason: String) -> Vec<Action> {
        vec![Action::Reply {
            update: offer.update,
            contributor: offer.contributor,
            verdict: Verdict::Reject { reason },
        }]
    }

    fn attest(&self, offer: &Offer, accuracy_bps: u16) -> Action {
        Action::Reply {
            update: offer.update,
            contributor: offer.contributor,
            verdict: Verdict::Attest {
                accuracy_bps,
                term: self.term,
                round: self.round,
            },
        }
    }

    fn on_offer(&mut self, round: u64, offer: Offer) -> Vec<Action> {
        if self.phase == Phase::Finished {
            return Self::reject(&offer, "the job is finished".into());
        }
        if round != self.round {
            return Self::reject(
                &offer,
                format!("round {round} is not open (round {} is)", self.round),
            );
        }
        if let Some((known, status)) = self.offers.get(&offer.update) {
            // Re-offers (a reconnecting contributor) get the same answer; while evaluating, the
            // driver parks the new request with the first one.
            if known.contributor != offer.contributor {
                return Self::reject(
                    &offer,
                    "update already offered by another contributor".into(),
                );
            }
            return match status {
                OfferStatus::Evaluating => Vec::new(),
                OfferStatus::Accepted { accuracy_bps } => vec![self.attest(known, *accuracy_bps)],
                OfferStatus::Rejected { reason } => Self::reject(known, reason.clone()),
            };
        }
        if self.phase == Phase::Aggregating {
            return Self::reject(&offer, format!("round {round} is closed"));
        }
        if offer.samples == 0 {
            return Self::reject(
                &offer,
                "an update must be trained on at least one sample".into(),
            );
        }
        let has_live_offer = self.offers.values().any(|(o, s)| {
            o.contributor == offer.contributor && !matches!(s, OfferStatus::Rejected { .. })
        });
        if has_live_offer {
            return Self::reject(
                &offer,
                format!("one update per contributor per round ({round})"),
            );
        }
        if self.offers.len() >= MAX_OFFERS_PER_ROUND {
            return Self::reject(&offer, format!("round {round} is full"));
        }
        self.offers
            .insert(offer.update, (offer.clone(), OfferStatus::Evaluating));
        vec![Action::Evaluate(offer)]
    }

    fn on_evaluated(&mut self, update: Hash32, result: Result<u16, String>) -> Vec<Action> {
        let min = self.config.min_accuracy_bps;
        let collecting = matches!(self.phase, Phase::Collecting { .. });
        let Some((offer, status)) = self.offers.get_mut(&update) else {
            return Vec::new(); // from a closed round: nobody waits for it any more
        };
        if *status != OfferStatus::Evaluating {
            return Vec::new();
        }
        let offer = offer.clone();
        let new_status = match result {
            _ if !collecting => OfferStatus::Rejected {
                reason: format!("round {} closed before evaluation finished", self.round),
            },
            Ok(acc) if acc >= min => OfferStatus::Accepted { accuracy_bps: acc },
            Ok(acc) => OfferStatus::Rejected {
                reason: format!("accuracy {acc} bps is below the job's minimum of {min} bps"),
            },
            Err(reason) => OfferStatus::Rejected { reason },
        };
        *status = new_status.clone();
        let mut actions = match new_status {
            OfferStatus::Accepted { accuracy_bps } => vec![self.attest(&offer, accuracy_bps)],
            OfferStatus::Rejected { reason } => Self::reject(&offer, reason),
            OfferStatus::Evaluating => Vec::new(),
        };
        if collecting && self.accepted_count() >= self.target() {
            actions.push(self.close());
        }
        actions
    }

    fn on_planned(&mut self, round: u64, expected: usize) -> Vec<Action> {
        // A plan with nobody in it changes nothing: the round waits for a machine to return.
        if round != self.round || expected == 0 {
            return Vec::new();
        }
        self.planned = Some(expected);
        match self.phase {
            Phase::Collecting { .. } if self.accepted_count() >= self.target() => {
                vec![self.close()]
            }
            _ => Vec::new(),
        }
    }

    /// Accepted updates that close the round at once.
    fn target(&self) -> usize {
        let t = self.config.target_updates;
        self.planned.map_or(t, |n| t.min(n)).max(1)
    }

    fn on_tick(&mut self, now_ms: u64) -> Vec<Action> {
        let Phase::Collecting { deadline_ms } = self.phase else {
            return Vec::new();
        };
        if now_ms >= deadline_ms {
            if self.accepted_count() >= self.config.quorum.max(1) {
                return vec![self.close()];
            }
            // Too few updates: keep the round open rather than publish a model trained on none.
            self.phase = Phase::Collecting {
                deadline_ms: now_ms + self.config.round_timeout_ms,
            };
            self.last_head_ms = now_ms;
            return vec![Action::PublishHead(self.head())];
        }
        if now_ms.saturating_sub(self.last_head_ms) >= self.config.republish_ms {
            self.last_head_ms = now_ms;
            return vec![Action::PublishHead(self.head())];
        }
        Vec::new()
    }

    fn on_aggregated(&mut self, model: Hash32, accuracy_bps: u16, now_ms: u64) -> Vec<Action> {
        if self.phase != Phase::Aggregating {
            return Vec::new();
        }
        let mut actions = vec![Action::RecordRound {
            round: self.round,
            model,
            accuracy_bps,
        }];
        self.model = model;
        self.accuracy_bps = Some(accuracy_bps);
        self.round += 1;
        if self.round > self.config.total_rounds {
            self.phase = Phase::Finished;
            self.offers.clear();
            actions.push(Action::PublishHead(self.head()));
            actions.push(Action::Finished);
        } else {
            actions.extend(self.open(now_ms));
        }
        actions
    }

    fn accepted_count(&self) -> usize {
        self.offers
            .values()
            .filter(|(_, s)| matches!(s, OfferStatus::Accepted { .. }))
            .count()
    }

    fn close(&mut self) -> Action {
        self.phase = Phase::Aggregating;
        // Offers still under evaluation will be told the round closed when their result comes.
        self.aggregate_action()
    }

    fn aggregate_action(&self) -> Action {
        Action::Aggregate {
            round: self.round,
            updates: self.accepted(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RoundConfig {
        RoundConfig {
            total_rounds: 2,
            target_updates: 2,
            quorum: 1,
            round_timeout_ms: 10_000,
            min_accuracy_bps: 7_000,
            republish_ms: 1_000,
        }
    }

    fn h(n: u8) -> Hash32 {
        Hash32([n; 32])
    }

    fn offer(n: u8, who: u8) -> Offer {
        Offer {
            update: h(n),
            contributor: [who; 20],
            samples: 100 * n as u64,
        }
    }

    fn start() -> RoundMachine {
        let (m, actions) = RoundMachine::start(cfg(), 1, 0, h(0), None, 0);
        assert!(matches!(
            &actions[..],
            [Action::PublishHead(Head {
                open_round: Some(1),
                completed_round: 0,
                ..
            })]
        ));
        m
    }

    fn offer_in(m: &mut RoundMachine, round: u64, o: Offer) -> Vec<Action> {
        m.handle(Input::Offer { round, offer: o }, 100)
    }

    #[test]
    fn round_closes_when_target_updates_accepted() {
        let mut m = start();
        assert_eq!(
            offer_in(&mut m, 1, offer(1, 1)),
            vec![Action::Evaluate(offer(1, 1))]
        );
        assert_eq!(
            offer_in(&mut m, 1, offer(2, 2)),
            vec![Action::Evaluate(offer(2, 2))]
        );
        let a = m.handle(
            Input::Evaluated {
                update: h(1),
                result: Ok(9_000),
            },
            200,
        );
        assert_eq!(
            a,
            vec![Action::Reply {
                update: h(1),
                contributor: [1; 20],
                verdict: Verdict::Attest {
                    accuracy_bps: 9_000,
                    term: 1,
                    round: 1
                }
            }]
        );
        let a = m.handle(
            Input::Evaluated {
                update: h(2),
                result: Ok(8_000),
            },
            300,
        );
        assert_eq!(a.len(), 2);
        assert_eq!(
            a[1],
            Action::Aggregate {
                round: 1,
                updates: vec![(offer(1, 1), 9_000), (offer(2, 2), 8_000)]
            }
        );
        assert_eq!(m.phase(), &Phase::Aggregating);
    }

    #[test]
    fn aggregated_round_is_recorded_and_next_opens_then_job_finishes() {
        let mut m = start();
        offer_in(&mut m, 1, offer(1, 1));
        offer_in(&mut m, 1, offer(2, 2));
        m.handle(
            Input::Evaluated {
                update: h(1),
                result: Ok(9_000),
            },
            0,
        );
        m.handle(
            Input::Evaluated {
                update: h(2),
                result: Ok(9_000),
            },
            0,
        );
        let a = m.handle(
            Input::Aggregated {
                model: h(10),
                accuracy_bps: 9_100,
            },
            1_000,
        );
        assert_eq!(
            a[0],
            Action::RecordRound {
                round: 1,
                model: h(10),
                accuracy_bps: 9_100
            }
        );
        assert!(
            matches!(&a[1], Action::PublishHead(Head { completed_round: 1, open_round: Some(2), model, accuracy_bps: Some(9_100), deadline_ms: 11_000, .. }) if *model == h(10))
        );
        assert_eq!(m.round(), 2);
        // Round 2.
        offer_in(&mut m, 2, offer(3, 1));
        m.handle(
            Input::Evaluated {
                update: h(3),
                result: Ok(9_500),
            },
            2_000,
        );
        // Deadline with quorum 1 closes it.
        let a = m.handle(Input::Tick, 11_000);
        assert_eq!(
            a,
            vec![Action::Aggregate {
                round: 2,
                updates: vec![(offer(3, 1), 9_500)]
            }]
        );
        let a = m.handle(
            Input::Aggregated {
                model: h(11),
                accuracy_bps: 9_600,
            },
            12_000,
        );
        assert_eq!(
            a[0],
            Action::RecordRound {
                round: 2,
                model: h(11),
                accuracy_bps: 9_600
            }
        );
        assert!(matches!(
            &a[1],
            Action::PublishHead(Head {
                completed_round: 2,
                open_round: None,
                ..
            })
        ));
        assert_eq!(a[2], Action::Finished);
        assert_eq!(m.phase(), &Phase::Finished);
        assert!(matches!(
            &offer_in(&mut m, 3, offer(4, 1))[..],
            [Action::Reply {
                verdict: Verdict::Reject { .. },
                ..
            }]
        ));
    }

    #[test]
    fn low_accuracy_and_invalid_updates_are_rejected_with_reasons() {
        let mut m = start();
        offer_in(&mut m, 1, offer(1, 1));
        offer_in(&mut m, 1, offer(2, 2));
        let a = m.handle(
            Input::Evaluated {
                update: h(1),
                result: Ok(6_999),
            },
            0,
        );
        assert!(
            matches!(&a[..], [Action::Reply { verdict: Verdict::Reject { reason }, .. }] if reason.contains("below"))
        );
        let a = m.handle(
            Input::Evaluated {
                update: h(2),
                result: Err("value at fc1.weight[3] is NaN".into()),
            },
            0,
        );
        assert!(
            matches!(&a[..], [Action::Reply { verdict: Verdict::Reject { reason }, .. }] if reason.contains("NaN"))
        );
        assert!(m.accepted().is_empty());
        // A rejected contributor may offer another update in the same round.
        assert_eq!(
            offer_in(&mut m, 1, offer(3, 1)),
            vec![Action::Evaluate(offer(3, 1))]
        );
    }

    #[test]
    fn wrong_round_duplicate_contributor_and_zero_samples_rejected() {
        let mut m = start();
        assert!(
            matches!(&offer_in(&mut m, 2, offer(1, 1))[..], [Action::Reply { verdict: Verdict::Reject { reason }, .. }] if reason.contains("not open"))
        );
        offer_in(&mut m, 1, offer(1, 1));
        assert!(
            matches!(&offer_in(&mut m, 1, offer(2, 1))[..], [Action::Reply { verdict: Verdict::Reject { reason }, .. }] if reason.contains("one update per contributor"))
        );
        let zero = Offer {
            samples: 0,
            ..offer(5, 5)
        };
        assert!(matches!(
            &offer_in(&mut m, 1, zero)[..],
            [Action::Reply {
                verdict: Verdict::Reject { .. },
                ..
            }]
        ));
        // Someone else re-offering a known update hash is refused.
        assert!(
            matches!(&offer_in(&mut m, 1, offer(1, 9))[..], [Action::Reply { verdict: Verdict::Reject { reason }, .. }] if reason.contains("another contributor"))
        );
    }

    #[test]
    fn reoffer_is_idempotent() {
        let mut m = start();
        offer_in(&mut m, 1, offer(1, 1));
        assert!(
            offer_in(&mut m, 1, offer(1, 1)).is_empty(),
            "still evaluating: driver parks it"
        );
        m.handle(
            Input::Evaluated {
                update: h(1),
                result: Ok(9_000),
            },
            0,
        );
        let again = offer_in(&mut m, 1, offer(1, 1));
        assert!(matches!(
            &again[..],
            [Action::Reply {
                verdict: Verdict::Attest {
                    accuracy_bps: 9_000,
                    term: 1,
                    round: 1
                },
                ..
            }]
        ));
        // A duplicate evaluation result changes nothing.
        assert!(
            m.handle(
                Input::Evaluated {
                    update: h(1),
                    result: Ok(1)
                },
                0
            )
            .is_empty()
        );
    }

    #[test]
    fn deadline_without_quorum_extends_the_round() {
        let mut m = start();
        let a = m.handle(Input::Tick, 10_000);
        assert!(matches!(
            &a[..],
            [Action::PublishHead(Head {
                open_round: Some(1),
                deadline_ms: 20_000,
                ..
            })]
        ));
        assert_eq!(
            m.phase(),
            &Phase::Collecting {
                deadline_ms: 20_000
            }
        );
    }

    #[test]
    fn head_is_republished_periodically() {
        let mut m = start();
        assert!(m.handle(Input::Tick, 500).is_empty());
        assert!(matches!(
            &m.handle(Input::Tick, 1_000)[..],
            [Action::PublishHead(_)]
        ));
        assert!(m.handle(Input::Tick, 1_500).is_empty());
    }

    #[test]
    fn evaluation_finishing_after_close_is_rejected_not_lost_silently() {
        let mut m = RoundMachine::start(
            RoundConfig {
                target_updates: 1,
                ..cfg()
            },
            1,
            0,
            h(0),
            None,
            0,
        )
        .0;
        offer_in(&mut m, 1, offer(1, 1));
        offer_in(&mut m, 1, offer(2, 2));
        let a = m.handle(
            Input::Evaluated {
                update: h(1),
                result: Ok(9_000),
            },
            0,
        );
        assert!(matches!(a.last(), Some(Action::Aggregate { .. })));
        let a = m.handle(
            Input::Evaluated {
                update: h(2),
                result: Ok(9_000),
            },
            0,
        );
        assert!(
            matches!(&a[..], [Action::Reply { verdict: Verdict::Reject { reason }, .. }] if reason.contains("closed"))
        );
    }

    #[test]
    fn resume_after_restart_redoes_pending_work() {
        let mut m = start();
        offer_in(&mut m, 1, offer(1, 1));
        offer_in(&mut m, 1, offer(2, 2));
        m.handle(
            Input::Evaluated {
                update: h(1),
                result: Ok(9_000),
            },
            0,
        );
        // Persist and reload.
        let bytes = crate::cbor::to_vec(&m).unwrap();
        let mut m2: RoundMachine = crate::cbor::from_slice(&bytes, 1 << 20).unwrap();
        assert_eq!(m2, m);
        let a = m2.resume(5_000);
        assert!(matches!(a[0], Action::PublishHead(_)));
        assert_eq!(a[1], Action::Evaluate(offer(2, 2)));
        m2.handle(
            Input::Evaluated {
                update: h(2),
                result: Ok(9_000),
            },
            5_000,
        );
        assert_eq!(
            m2.resume(6_000),
            vec![Action::Aggregate {
                round: 1,
                updates: vec![(offer(1, 1), 9_000), (offer(2, 2), 9_000)]
            }]
        );
    }

    #[test]
    fn failed_aggregation_reopens_with_accepted_updates_kept() {
        let mut m = RoundMachine::start(
            RoundConfig {
                target_updates: 1,
                ..cfg()
            },
            1,
            0,
            h(0),
            None,
            0,
        )
        .0;
        offer_in(&mut m, 1, offer(1, 1));
        m.handle(
            Input::Evaluated {
                update: h(1),
                result: Ok(9_000),
            },
            0,
        );
        let a = m.handle(
            Input::AggregationFailed {
                reason: "blob gone".into(),
            },
            100,
        );
        assert!(matches!(&a[..], [Action::PublishHead(_)]));
        assert_eq!(m.accepted().len(), 1);
        assert!(matches!(
            &m.handle(Input::Tick, 10_100)[..],
            [Action::Aggregate { .. }]
        ));
    }

    #[test]
    fn new_term_resumes_after_recorded_rounds() {
        let (m, a) = RoundMachine::start(cfg(), 2, 1, h(7), Some(9_000), 50);
        assert_eq!(m.round(), 2);
        assert!(matches!(
            &a[..],
            [Action::PublishHead(Head {
                term: 2,
                completed_round: 1,
                open_round: Some(2),
                ..
            })]
        ));
        let (m, a) = RoundMachine::start(cfg(), 3, 2, h(8), Some(9_100), 50);
        assert_eq!(m.phase(), &Phase::Finished);
        assert_eq!(a.last(), Some(&Action::Finished));
    }

    fn accept(m: &mut RoundMachine, n: u8, now: u64) -> Vec<Action> {
        m.handle(
            Input::Evaluated {
                update: h(n),
                result: Ok(9_000),
            },
            now,
        )
    }

    #[test]
    fn a_round_planned_over_fewer_machines_than_its_target_closes_when_they_all_sent() {
        let mut m = start();
        assert!(
            m.handle(
                Input::Planned {
                    round: 1,
                    expected: 1
                },
                50
            )
            .is_empty()
        );
        offer_in(&mut m, 1, offer(1, 1));
        let a = accept(&mut m, 1, 200);
        assert_eq!(
            a.last(),
            Some(&Action::Aggregate {
                round: 1,
                updates: vec![(offer(1, 1), 9_000)]
            })
        );
        // The next round starts unplanned: its target is the job's again.
        m.handle(
            Input::Aggregated {
                model: h(10),
                accuracy_bps: 9_000,
            },
            300,
        );
        offer_in(&mut m, 2, offer(2, 1));
        assert_eq!(accept(&mut m, 2, 400).len(), 1, "only the attestation");
        assert!(matches!(m.phase(), Phase::Collecting { .. }));
    }

    #[test]
    fn a_re_plan_without_a_departed_machine_closes_a_round_that_waits_for_it() {
        let mut m = start();
        let plan = |m: &mut RoundMachine, round, expected| {
            m.handle(Input::Planned { round, expected }, 500)
        };
        assert!(plan(&mut m, 1, 2).is_empty());
        offer_in(&mut m, 1, offer(1, 1));
        assert_eq!(
            accept(&mut m, 1, 200).len(),
            1,
            "waits for the second machine"
        );
        // A plan for another round, or with nobody in it, changes nothing.
        assert!(plan(&mut m, 2, 1).is_empty());
        assert!(plan(&mut m, 1, 0).is_empty());
        assert!(matches!(m.phase(), Phase::Collecting { .. }));
        // The head is re-published without the machine that left.
        assert_eq!(
            plan(&mut m, 1, 1),
            vec![Action::Aggregate {
                round: 1,
                updates: vec![(offer(1, 1), 9_000)]
            }]
        );
        assert_eq!(m.phase(), &Phase::Aggregating);
    }
}
