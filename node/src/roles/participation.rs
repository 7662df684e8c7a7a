//! A contributor's state for one job: which round it trains for, where its update stands, and
//! whether its reward was claimed.
//!
//! Pure logic driven by what the contributor hears (round heads from the coordinator, verdicts,
//! transaction outcomes); the driver in `roles::contributor` trains, sends and submits, and
//! persists this state after every step so that a restarted contributor neither retrains an
//! update it already offered nor claims a reward twice.

use serde::{Deserialize, Serialize};

use crate::{hash::Hash32, roles::round::Head};

/// An attestation received from the coordinator, ready to be submitted on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// Measured accuracy, basis points.
    pub accuracy_bps: u16,
    /// Term of the coordinator that signed it.
    pub term: u64,
    /// The coordinator's EIP-712 signature (65 bytes).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Where this contributor's update for a round stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkStatus {
    /// Training on the round's model.
    Training,
    /// Trained; offered (or to be offered) to the coordinator.
    Offered {
        /// The update's blob id.
        update: Hash32,
        /// Samples it was trained on.
        samples: u64,
    },
    /// The coordinator accepted it; the reward is to be claimed.
    Attested {
        /// The update's blob id.
        update: Hash32,
        /// Samples it was trained on.
        samples: u64,
        /// The signed accuracy.
        attestation: Attestation,
    },
    /// The reward was paid (or the chain says it already was). The update is still offered to a
    /// new coordinator taking over the round, so that it counts in the aggregate.
    Claimed {
        /// The update's blob id.
        update: Hash32,
        /// Samples it was trained on.
        samples: u64,
    },
    /// The coordinator rejected it; nothing more to do this round.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// The contributor's work for one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// The round.
    pub round: u64,
    /// The model trained from.
    pub base_model: Hash32,
    /// Status.
    pub status: WorkStatus,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch `model` and train on local data for `round`; feed back [`Input::Trained`].
    Train {
        /// The round.
        round: u64,
        /// The global model to start from.
        model: Hash32,
    },
    /// Offer the update to the coordinator of `term`; feed back [`Input::Verdict`] or
    /// [`Input::OfferFailed`].
    Offer {
        /// The round.
        round: u64,
        /// The update.
        update: Hash32,
        /// Its sample count.
        samples: u64,
        /// Term of the coordinator to send it to.
        term: u64,
    },
    /// Submit the attested update on chain; feed back [`Input::ClaimDone`] or
    /// [`Input::ClaimFailed`].
    Claim {
        /// The round.
        round: u64,
        /// The update.
        update: Hash32,
        /// The coordinator's attestation.
        attestation: Attestation,
    },
}

/// Events fed to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A round head from the job's coordinator.
    Head(Head),
    /// Local training finished.
    Trained {
        /// The round trained for.
        round: u64,
        /// The update's blob id.
        update: Hash32,
        /// Samples used.
        samples: u64,
    },
    /// The coordinator answered an offer.
    Verdict {
        /// The round.
        round: u64,
        /// The update.
        update: Hash32,
        /// Attestation, or the rejection reason.
        verdict: Result<Attestation, String>,
    },
    /// The offer could not be delivered (coordinator unreachable); retried on the next head.
    OfferFailed {
        /// The round.
        round: u64,
    },
    /// The reward transaction succeeded (or the chain reports this update as already paid).
    ClaimDone {
        /// The round.
        round: u64,
    },
    /// The reward transaction failed; `stale_term` when the attestation's term is no longer
    /// current (the new coordinator must re-attest).
    ClaimFailed {
        /// The round.
        round: u64,
        /// Whether the failure was a replaced coordinator's signature.
        stale_term: bool,
    },
}

/// A contributor's state for one job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participation {
    /// Highest coordinator term heard.
    pub term: u64,
    /// The job is finished (the coordinator said so).
    pub finished: bool,
    /// The current round's work.
    pub work: Option<Work>,
    /// Rounds whose reward this contributor received.
    pub claimed_rounds: Vec<u64>,
}

impl Participation {
    /// Feeds one input; returns what the driver must do.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Head(head) => self.on_head(head),
            Input::Trained {
                round,
                update,
                samples,
            } => match &mut self.work {
                Some(w) if w.round == round && w.status == WorkStatus::Training => {
                    w.status = WorkStatus::Offered { update, samples };
                    vec![Action::Offer {
                        round,
                        update,
                        samples,
                        term: self.term,
                    }]
                }
                _ => Vec::new(), // stale: the job moved on while we trained
            },
            Input::Verdict {
                round,
                update,
                verdict,
            } => {
                let Some(w) = self.work.as_mut().filter(|w| w.round == round) else {
                    return Vec::new();
                };
                let WorkStatus::Offered {
                    update: offered,
                    samples,
                } = w.status.clone()
                else {
                    return Vec::new();
                };
                if offered != update {
                    return Vec::new();
                }
                match verdict {
                    Ok(attestation) => {
                        w.status = WorkStatus::Attested {
                            update,
                            samples,
                            attestation: attestation.clone(),
                        };
                        vec![Action::Claim {
                            round,
                            update,
                            attestation,
                        }]
                    }
                    Err(reason) => {
                        w.status = WorkStatus::Rejected { reason };
                        Vec::new()
                    }
                }
            }
            Input::OfferFailed { .. } => Vec::new(),
            Input::ClaimDone { round } => {
                if let Some(w) = self.work.as_mut().filter(|w| w.round == round)
                    && let WorkStatus::Attested {
                        update, samples, ..
                    } = w.status
                {
                    w.status = WorkStatus::Claimed { update, samples };
                }
                if !self.claimed_rounds.contains(&round) {
                    self.claimed_rounds.push(round);
                }
                Vec::new()
            }
            Input::ClaimFailed { round, stale_term } => {
                let Some(w) = self.work.as_mut().filter(|w| w.round == round) else {
                    return Vec::new();
                };
                if let WorkStatus::Attested {
                    update, samples, ..
                } = w.status.clone()
                {
                    if stale_term {
                        // Back to offered: the next head (new term) triggers a re-offer.
                        w.status = WorkStatus::Offered { update, samples };
                    } else {
                        w.status = WorkStatus::Rejected {
                            reason: "reward transaction failed".into(),
                        };
                    }
                }
                Vec::new()
            }
        }
    }

    /// Actions to redo after a restart (persisted state, nothing in flight).
    pub fn resume(&self) -> Vec<Action> {
        match &self.work {
            Some(Work {
                round,
                base_model,
                status: WorkStatus::Training,
            }) => {
                vec![Action::Train {
                    round: *round,
                    model: *base_model,
                }]
            }
            Some(Work {
                round,
                status: WorkStatus::Offered { update, samples },
                ..
            }) => {
                vec![Action::Offer {
                    round: *round,
                    update: *update,
                    samples: *samples,
                    term: self.term,
                }]
            }
            Some(Work {
                round,
                status:
                    WorkStatus::Attested {
                        update,
                        attestation,
                        ..
                    },
                ..
            }) => {
                vec![Action::Claim {
                    round: *round,
                    update: *update,
                    attestation: attestation.clone(),
                }]
            }
            _ => Vec::new(),
        }
    }

    fn on_head(&mut self, head: Head) -> Vec<Action> {
        if head.term < self.term {
            return Vec::new(); // a fenced-off coordinator
        }
        let new_term = head.term > self.term;
        self.term = head.term;
        let Some(open) = head.open_round else {
            self.finished = true;
            // A final attestation may still be unclaimed: keep it; nothing new to train.
            return Vec::new();
        };
        match &mut self.work {
            Some(w) if w.round == open => match &w.status {
                // A new coordinator took over mid-round: our offer (or a signature from the old
                // term) must go to it.
                WorkStatus::Offered { update, samples } => {
                    vec![Action::Offer {
                        round: open,
                        update: *update,
                        samples: *samples,
                        term: self.term,
                    }]
                }
                WorkStatus::Attested {
                    update,
                    samples,
                    attestation,
                } if new_term && attestation.term < self.term => {
                    let (update, samples) = (*update, *samples);
                    w.status = WorkStatus::Offered { update, samples };
                    vec![Action::Offer {
                        round: open,
                        update,
                        samples,
                        term: self.term,
                    }]
                }
                // Already paid, but the new coordinator restarts the round without it: offer it
                // again so that the accepted update still counts (the contract pays it once).
                WorkStatus::Claimed { update, samples } if new_term => {
                    vec![Action::Offer {
                        round: open,
                        update: *update,
                        samples: *samples,
                        term: self.term,
                    }]
                }
                _ => Vec::new(),
            },
            // A stale head of the same term.
            Some(w) if w.round > open && !new_term => Vec::new(),
            // Round `open` is new to us. An unclaimed attestation of an earlier round stays
            // claimable (the contract accepts any round of the job) unless the term changed.
            _ => {
                if let Some(Work {
                    round,
                    status:
                        WorkStatus::Attested {
                            update,
                            attestation,
                            ..
                        },
                    ..
                }) = &self.work
                    && attestation.term == self.term
                {
                    // Claim before moving on, so the reward is not forgotten.
                    let claim = Action::Claim {
                        round: *round,
                        update: *update,
                        attestation: attestation.clone(),
                    };
                    self.work = Some(Work {
                        round: open,
                        base_model: head.model,
                        status: WorkStatus::Training,
                    });
                    return vec![
                        claim,
                        Action::Train {
                            round: open,
                            model: head.model,
                        },
                    ];
                }
                self.work = Some(Work {
                    round: open,
                    base_model: head.model,
                    status: WorkStatus::Training,
                });
                vec![Action::Train {
                    round: open,
                    model: head.model,
                }]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> Hash32 {
        Hash32([n; 32])
    }

    fn head(term: u64, open: Option<u64>, model: u8) -> Head {
        Head {
            term,
            completed_round: open.map_or(3, |r| r - 1),
            model: h(model),
            accuracy_bps: None,
            open_round: open,
            deadline_ms: 0,
        }
    }

    /// Round 2 opened under term 1 and trained into update h(6) of 10 samples.
    fn trained_round_2(p: &mut Participation) {
        p.handle(Input::Head(head(1, Some(2), 1)));
        p.handle(Input::Trained {
            round: 2,
            update: h(6),
            samples: 10,
        });
    }

    fn att(term: u64) -> Attestation {
        Attestation {
            accuracy_bps: 9_000,
            term,
            signature: vec![1; 65],
        }
    }

    #[test]
    fn full_round_trains_offers_claims() {
        let mut p = Participation::default();
        assert_eq!(
            p.handle(Input::Head(head(1, Some(1), 0))),
            vec![Action::Train {
                round: 1,
                model: h(0)
            }]
        );
        // Repeated heads don't retrain.
        assert!(p.handle(Input::Head(head(1, Some(1), 0))).is_empty());
        assert_eq!(
            p.handle(Input::Trained {
                round: 1,
                update: h(5),
                samples: 300
            }),
            vec![Action::Offer {
                round: 1,
                update: h(5),
                samples: 300,
                term: 1
            }]
        );
        assert_eq!(
            p.handle(Input::Verdict {
                round: 1,
                update: h(5),
                verdict: Ok(att(1))
            }),
            vec![Action::Claim {
                round: 1,
                update: h(5),
                attestation: att(1)
            }]
        );
        assert!(p.handle(Input::ClaimDone { round: 1 }).is_empty());
        assert_eq!(p.claimed_rounds, vec![1]);
        assert_eq!(
            p.handle(Input::Head(head(1, Some(2), 1))),
            vec![Action::Train {
                round: 2,
                model: h(1)
            }]
        );
        assert!(p.handle(Input::Head(head(1, None, 2))).is_empty());
        assert!(p.finished);
    }

    #[test]
    fn stale_training_result_is_dropped() {
        let mut p = Participation::default();
        p.handle(Input::Head(head(1, Some(1), 0)));
        p.handle(Input::Head(head(1, Some(2), 1)));
        assert!(
            p.handle(Input::Trained {
                round: 1,
                update: h(5),
                samples: 1
            })
            .is_empty()
        );
    }

    #[test]
    fn new_coordinator_gets_the_pending_offer() {
        let mut p = Participation::default();
        trained_round_2(&mut p);
        assert!(p.handle(Input::OfferFailed { round: 2 }).is_empty());
        // Term 2 resumes round 2.
        assert_eq!(
            p.handle(Input::Head(head(2, Some(2), 1))),
            vec![Action::Offer {
                round: 2,
                update: h(6),
                samples: 10,
                term: 2
            }]
        );
    }

    #[test]
    fn attestation_from_replaced_coordinator_is_reoffered() {
        let mut p = Participation::default();
        trained_round_2(&mut p);
        p.handle(Input::Verdict {
            round: 2,
            update: h(6),
            verdict: Ok(att(1)),
        });
        // The claim failed because term 2 was claimed meanwhile.
        p.handle(Input::ClaimFailed {
            round: 2,
            stale_term: true,
        });
        assert_eq!(
            p.handle(Input::Head(head(2, Some(2), 1))),
            vec![Action::Offer {
                round: 2,
                update: h(6),
                samples: 10,
                term: 2
            }]
        );
        // Or the new term's head arrives before we even tried to claim.
        let mut q = Participation::default();
        trained_round_2(&mut q);
        q.handle(Input::Verdict {
            round: 2,
            update: h(6),
            verdict: Ok(att(1)),
        });
        assert_eq!(
            q.handle(Input::Head(head(2, Some(2), 1))),
            vec![Action::Offer {
                round: 2,
                update: h(6),
                samples: 10,
                term: 2
            }]
        );
    }

    #[test]
    fn claimed_update_is_offered_to_a_new_coordinator_but_not_claimed_twice() {
        let mut p = Participation::default();
        trained_round_2(&mut p);
        p.handle(Input::Verdict {
            round: 2,
            update: h(6),
            verdict: Ok(att(1)),
        });
        p.handle(Input::ClaimDone { round: 2 });
        assert_eq!(
            p.handle(Input::Head(head(2, Some(2), 1))),
            vec![Action::Offer {
                round: 2,
                update: h(6),
                samples: 10,
                term: 2
            }]
        );
        // The new coordinator's attestation is not claimed again.
        assert!(
            p.handle(Input::Verdict {
                round: 2,
                update: h(6),
                verdict: Ok(att(2))
            })
            .is_empty()
        );
        assert!(p.handle(Input::Head(head(2, Some(2), 1))).is_empty());
    }

    #[test]
    fn new_term_reopening_an_earlier_round_retrains_it() {
        let mut p = Participation::default();
        p.handle(Input::Head(head(1, Some(3), 2)));
        // Term 2 resumes from the chain, where round 2 was never recorded.
        assert_eq!(
            p.handle(Input::Head(head(2, Some(2), 1))),
            vec![Action::Train {
                round: 2,
                model: h(1)
            }]
        );
        // But a stale head of the current term is ignored.
        let mut q = Participation::default();
        q.handle(Input::Head(head(1, Some(3), 2)));
        assert!(q.handle(Input::Head(head(1, Some(2), 1))).is_empty());
    }

    #[test]
    fn fenced_coordinator_is_ignored() {
        let mut p = Participation::default();
        p.handle(Input::Head(head(3, Some(1), 0)));
        assert!(p.handle(Input::Head(head(2, Some(4), 9))).is_empty());
        assert_eq!(p.work.as_ref().unwrap().round, 1);
    }

    #[test]
    fn unclaimed_reward_is_claimed_before_moving_on() {
        let mut p = Participation::default();
        p.handle(Input::Head(head(1, Some(1), 0)));
        p.handle(Input::Trained {
            round: 1,
            update: h(5),
            samples: 3,
        });
        p.handle(Input::Verdict {
            round: 1,
            update: h(5),
            verdict: Ok(att(1)),
        });
        let a = p.handle(Input::Head(head(1, Some(2), 1)));
        assert_eq!(
            a,
            vec![
                Action::Claim {
                    round: 1,
                    update: h(5),
                    attestation: att(1)
                },
                Action::Train {
                    round: 2,
                    model: h(1)
                }
            ]
        );
    }

    #[test]
    fn rejection_is_final_for_the_round() {
        let mut p = Participation::default();
        p.handle(Input::Head(head(1, Some(1), 0)));
        p.handle(Input::Trained {
            round: 1,
            update: h(5),
            samples: 3,
        });
        assert!(
            p.handle(Input::Verdict {
                round: 1,
                update: h(5),
                verdict: Err("NaN".into())
            })
            .is_empty()
        );
        assert!(p.handle(Input::Head(head(1, Some(1), 0))).is_empty());
        assert!(p.resume().is_empty());
    }

    #[test]
    fn resume_redoes_the_step_in_progress() {
        let mut p = Participation::default();
        p.handle(Input::Head(head(1, Some(1), 0)));
        assert_eq!(
            p.resume(),
            vec![Action::Train {
                round: 1,
                model: h(0)
            }]
        );
        p.handle(Input::Trained {
            round: 1,
            update: h(5),
            samples: 3,
        });
        assert_eq!(
            p.resume(),
            vec![Action::Offer {
                round: 1,
                update: h(5),
                samples: 3,
                term: 1
            }]
        );
        p.handle(Input::Verdict {
            round: 1,
            update: h(5),
            verdict: Ok(att(1)),
        });
        assert_eq!(
            p.resume(),
            vec![Action::Claim {
                round: 1,
                update: h(5),
                attestation: att(1)
            }]
        );
        p.handle(Input::ClaimDone { round: 1 });
        assert!(p.resume().is_empty());
    }
}
