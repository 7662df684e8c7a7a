// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ITrainingPool
/// @notice Federated-training jobs paid in $DUCK. A requester deposits a reward pool; staked
/// coordinators claim the job in terms (leases kept alive by recording rounds); contributors
/// submit updates whose validation accuracy the current coordinator attested (EIP-712) and are
/// paid per accepted update; the unspent pool returns to the requester when the job finishes.
interface ITrainingPool {
    /// @notice How a job pays accepted updates.
    /// @dev PerUpdate pays `rewardPerUpdate` each; PerRound splits `rewardPerRound` evenly over
    /// `maxUpdatesPerRound` slots (the remainder of the division is refunded at the end).
    enum RewardMode {
        PerUpdate,
        PerRound
    }

    /// @notice What a requester asks for and pays.
    /// @param modelHash Blob id of the initial global model weights.
    /// @param validationHash Blob id of the validation set the coordinator measures accuracy on.
    /// @param specHash Blob id of the off-chain job spec (model architecture, hyperparameters).
    /// @param specUri Optional URI of the same spec ("" when only the blob id is used).
    /// @param totalRewardPool Deposit; must cover every paid slot of every round.
    /// @param rewardPerUpdate Reward per accepted update (PerUpdate mode, else 0).
    /// @param rewardPerRound Reward per round, split over its slots (PerRound mode, else 0).
    /// @param rounds Number of rounds; recording the last one completes the job.
    /// @param maxUpdatesPerRound Most updates paid per round.
    /// @param minAccuracyBps Least attested accuracy, in basis points, for an update to be paid.
    /// @param rewardMode PerUpdate or PerRound.
    /// @param leaseSeconds How long a coordinator term lasts without activity.
    /// @param claimWindow Seconds after completion during which contributors may still claim.
    /// @param deadline Unix time after which the requester may finish an unfinished job.
    /// @param clusterId 0 = open to all; else only providers of that cluster's active rentals.
    struct JobSpec {
        bytes32 modelHash;
        bytes32 validationHash;
        bytes32 specHash;
        string specUri;
        uint256 totalRewardPool;
        uint256 rewardPerUpdate;
        uint256 rewardPerRound;
        uint64 rounds;
        uint32 maxUpdatesPerRound;
        uint16 minAccuracyBps;
        RewardMode rewardMode;
        uint64 leaseSeconds;
        uint64 claimWindow;
        uint64 deadline;
        uint256 clusterId;
    }

    /// @notice A job and its progress.
    /// @param spec What was asked for.
    /// @param requester Who deposited and gets the refund.
    /// @param createdAt Creation time.
    /// @param lastRound The last recorded round (0 = none yet).
    /// @param term The current term (0 = never claimed).
    /// @param holder The current term's coordinator.
    /// @param lastActivity Last claim, renewal or recorded round of the current term.
    /// @param completedAt When the last round was recorded (0 = not completed).
    /// @param finished Whether the job was finished and refunded.
    /// @param paid Rewards paid so far.
    /// @param refunded What was refunded at finish.
    struct Job {
        JobSpec spec;
        address requester;
        uint64 createdAt;
        uint64 lastRound;
        uint64 term;
        address holder;
        uint64 lastActivity;
        uint64 completedAt;
        bool finished;
        uint256 paid;
        uint256 refunded;
    }

    /// @notice What the coordinator recorded for a round, and how many updates it paid.
    struct RoundRecord {
        bytes32 globalModelHash;
        uint16 accuracyBps;
        uint64 term;
        uint64 recordedAt;
        uint32 updatesPaid;
    }

    /// @notice A registered coordinator.
    /// @param registered Whether it is registered.
    /// @param stake The stake it deposited.
    /// @param peerId Its libp2p PeerId, as bytes.
    /// @param liveJobs Jobs (neither completed nor finished) whose current term it holds.
    struct Coordinator {
        bool registered;
        uint256 stake;
        bytes peerId;
        uint32 liveJobs;
    }

    /// @notice The job does not exist.
    error TrainingPoolUnknownJob(uint256 jobId);
    /// @notice A job spec field is out of range.
    error TrainingPoolInvalidSpec(string field);
    /// @notice The cluster named by a job spec does not exist.
    error TrainingPoolUnknownCluster(uint256 clusterId);
    /// @notice The account is already a registered coordinator.
    error TrainingPoolAlreadyRegistered(address coordinator);
    /// @notice The account is not a registered coordinator.
    error TrainingPoolNotRegistered(address account);
    /// @notice A PeerId must be 1..MAX_PEER_ID_BYTES bytes.
    error TrainingPoolInvalidPeerId(uint256 length);
    /// @notice The coordinator still holds the current term of `liveJobs` unfinished jobs.
    error TrainingPoolCoordinatorBusy(address coordinator, uint32 liveJobs);
    /// @notice The current term's lease has not run out.
    error TrainingPoolLeaseActive(uint256 jobId, uint64 term, address holder, uint64 leaseEnd);
    /// @notice Only the current term's holder may do this.
    error TrainingPoolNotTermHolder(uint256 jobId, address caller, address holder);
    /// @notice The job is completed, finished, or past its claim window.
    error TrainingPoolJobOver(uint256 jobId);
    /// @notice recordRound must record round `expected` next.
    error TrainingPoolUnexpectedRound(uint256 jobId, uint64 round, uint64 expected);
    /// @notice The round is outside 1..rounds.
    error TrainingPoolRoundOutOfRange(uint256 jobId, uint64 round, uint64 rounds);
    /// @notice Accuracy must be at most 10,000 basis points.
    error TrainingPoolInvalidAccuracy(uint16 accuracyBps);
    /// @notice The attestation names a term other than the job's current one.
    error TrainingPoolStaleTerm(uint256 jobId, uint64 term, uint64 currentTerm);
    /// @notice The attested accuracy is under the job's threshold.
    error TrainingPoolAccuracyBelowMinimum(uint256 jobId, uint16 accuracyBps, uint16 minAccuracyBps);
    /// @notice The signature was not made by the current term's holder.
    error TrainingPoolInvalidSignature(uint256 jobId, address signer, address holder);
    /// @notice This update was already rewarded in this job.
    error TrainingPoolUpdateAlreadyRewarded(uint256 jobId, bytes32 updateHash);
    /// @notice The contributor was already rewarded in this round.
    error TrainingPoolContributorAlreadyRewarded(uint256 jobId, uint64 round, address contributor);
    /// @notice The round already paid its maximum number of updates.
    error TrainingPoolRoundFull(uint256 jobId, uint64 round, uint32 maxUpdatesPerRound);
    /// @notice The job is limited to a cluster the contributor provides no active machine to.
    error TrainingPoolNotClusterMember(uint256 jobId, uint256 clusterId, address contributor);
    /// @notice The job cannot be finished yet by this caller.
    error TrainingPoolCannotFinish(uint256 jobId, address caller);

    /// @notice A coordinator registered and staked.
    event CoordinatorRegistered(address indexed coordinator, bytes peerId, uint256 stake);
    /// @notice A coordinator unregistered and took its stake back.
    event CoordinatorUnregistered(address indexed coordinator, uint256 stake);
    /// @notice A training job was created and its pool deposited.
    event TrainingJobCreated(
        uint256 indexed jobId,
        address indexed requester,
        bytes32 modelHash,
        bytes32 specHash,
        uint256 totalRewardPool,
        uint64 rounds,
        uint256 clusterId
    );
    /// @notice A coordinator claimed a new term of a job.
    event TermClaimed(uint256 indexed jobId, uint64 indexed term, address indexed coordinator);
    /// @notice The term's holder renewed its lease.
    event LeaseRenewed(uint256 indexed jobId, uint64 indexed term, uint64 leaseEnd);
    /// @notice The coordinator recorded a round's global model.
    event RoundRecorded(
        uint256 indexed jobId, uint64 indexed round, uint64 term, bytes32 globalModelHash, uint16 accuracyBps
    );
    /// @notice The last round was recorded.
    event TrainingJobCompleted(uint256 indexed jobId, uint64 completedAt);
    /// @notice A contributor was paid for an accepted update.
    event RewardDistributed(
        address indexed contributor, uint256 indexed jobId, uint64 round, bytes32 updateHash, uint256 amount
    );
    /// @notice The job was finished and the unspent pool refunded.
    event TrainingJobFinished(uint256 indexed jobId, uint256 refund);

    /// @notice Registers the caller as a coordinator, pulling the minimum stake.
    function registerCoordinator(bytes calldata peerId) external;
    /// @notice Unregisters the caller and returns its stake; not while it holds a live job.
    function unregisterCoordinator() external;
    /// @notice Creates a job, pulling `spec.totalRewardPool` from the caller.
    function createTrainingJob(JobSpec calldata spec) external returns (uint256 jobId);
    /// @notice Claims the job's next term (no term yet, or the current lease ran out).
    function claimTerm(uint256 jobId) external returns (uint64 term);
    /// @notice Keeps the current term's lease alive (holder only).
    function renewLease(uint256 jobId) external;
    /// @notice Records round `round` (= last + 1); recording the last round completes the job.
    function recordRound(uint256 jobId, uint64 round, bytes32 globalModelHash, uint16 accuracyBps) external;
    /// @notice Pays the caller for an update attested by the current term's coordinator.
    function submitUpdate(
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        uint16 accuracyBps,
        uint64 term,
        bytes calldata signature
    ) external returns (uint256 reward);
    /// @notice Refunds the unspent pool: by anyone once completed and the claim window passed,
    /// or by the requester after the deadline.
    function finishJob(uint256 jobId) external returns (uint256 refund);

    /// @notice Whether the accuracy meets the threshold and `signature` is the current term
    /// holder's EIP-712 attestation of these values (replays are not checked here).
    function verifyProof(
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        address contributor,
        uint16 accuracyBps,
        uint64 term,
        bytes calldata signature
    ) external view returns (bool);
    /// @notice The EIP-712 digest a coordinator signs for an attestation.
    function attestationDigest(
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        address contributor,
        uint16 accuracyBps,
        uint64 term
    ) external view returns (bytes32);
    /// @notice The EIP-712 domain separator.
    function domainSeparator() external view returns (bytes32);
    /// @notice A job by id.
    function getJob(uint256 jobId) external view returns (Job memory);
    /// @notice Number of jobs ever created (ids are 1..jobCount).
    function jobCount() external view returns (uint256);
    /// @notice The job's current term, its holder, its last activity, the lease length, and
    /// whether the lease is live now.
    function currentTerm(uint256 jobId)
        external
        view
        returns (uint64 term, address holder, uint64 lastActivity, uint64 leaseSeconds, bool live);
    /// @notice Who held a given term of a job.
    function termHolder(uint256 jobId, uint64 term) external view returns (address);
    /// @notice What was recorded for a round.
    function getRound(uint256 jobId, uint64 round) external view returns (RoundRecord memory);
    /// @notice A coordinator's registration.
    function coordinator(address account) external view returns (Coordinator memory);
    /// @notice What one accepted update of the job pays.
    function rewardPerAcceptedUpdate(uint256 jobId) external view returns (uint256);
    /// @notice Whether an update hash was already rewarded in the job.
    function isUpdateRewarded(uint256 jobId, bytes32 updateHash) external view returns (bool);
}
