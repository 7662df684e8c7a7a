// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {IComputeMarketplace} from "./interfaces/IComputeMarketplace.sol";
import {ITrainingPool} from "./interfaces/ITrainingPool.sol";

/// @title TrainingPool
/// @notice Federated-training jobs: reward pools, coordinator terms, attested updates, rewards.
/// @dev Terms are fencing tokens: a term's holder acts until another registered coordinator
/// claims the next term, which is only possible once the lease (`lastActivity + leaseSeconds`)
/// has run out. An attestation counts only for the job's current term, so a replaced
/// coordinator's signatures stop paying. Conservation: the contract holds exactly the stakes of
/// registered coordinators plus `totalRewardPool - paid` of every unfinished job.
contract TrainingPool is ITrainingPool, EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice EIP-712 type of a coordinator's attestation.
    bytes32 public constant ATTESTATION_TYPEHASH = keccak256(
        "Attestation(uint256 jobId,uint64 round,bytes32 updateHash,address contributor,uint16 accuracyBps,uint64 term)"
    );
    /// @notice 100% in basis points.
    uint16 public constant MAX_BPS = 10_000;
    /// @notice Most rounds in one job.
    uint64 public constant MAX_ROUNDS = 10_000;
    /// @notice Most paid updates per round.
    uint32 public constant MAX_UPDATES_PER_ROUND = 10_000;
    /// @notice Longest coordinator lease.
    uint64 public constant MAX_LEASE_SECONDS = 7 days;
    /// @notice Longest claim window after completion.
    uint64 public constant MAX_CLAIM_WINDOW = 90 days;
    /// @notice Furthest deadline from creation.
    uint64 public constant MAX_JOB_DURATION = 365 days;
    /// @notice Longest PeerId accepted, in bytes.
    uint256 public constant MAX_PEER_ID_BYTES = 128;
    /// @notice Longest spec URI accepted, in bytes.
    uint256 public constant MAX_URI_BYTES = 512;

    /// @notice The $DUCK token.
    IERC20 public immutable token;
    /// @notice The marketplace whose clusters can restrict a job's contributors.
    IComputeMarketplace public immutable marketplace;
    /// @notice Stake a coordinator deposits to register.
    uint256 public immutable minStake;

    uint256 private _jobCount;
    mapping(uint256 jobId => Job) private _jobs;
    mapping(uint256 jobId => mapping(uint64 term => address holder)) private _termHolders;
    mapping(uint256 jobId => mapping(uint64 round => RoundRecord)) private _rounds;
    mapping(uint256 jobId => mapping(bytes32 updateHash => bool)) private _rewardedUpdates;
    mapping(uint256 jobId => mapping(uint64 round => mapping(address contributor => bool))) private _rewardedInRound;
    mapping(address account => Coordinator) private _coordinators;

    /// @param token_ The $DUCK token.
    /// @param marketplace_ The compute marketplace (for cluster-restricted jobs).
    /// @param minStake_ Stake required to register as a coordinator.
    constructor(IERC20 token_, IComputeMarketplace marketplace_, uint256 minStake_)
        EIP712("QuackMesh TrainingPool", "1")
    {
        token = token_;
        marketplace = marketplace_;
        minStake = minStake_;
    }

    // ------------------------------------------------------------------ coordinators

    /// @inheritdoc ITrainingPool
    function registerCoordinator(bytes calldata peerId) external nonReentrant {
        Coordinator storage c = _coordinators[msg.sender];
        if (c.registered) revert TrainingPoolAlreadyRegistered(msg.sender);
        if (peerId.length == 0 || peerId.length > MAX_PEER_ID_BYTES) revert TrainingPoolInvalidPeerId(peerId.length);
        c.registered = true;
        c.stake = minStake;
        c.peerId = peerId;
        emit CoordinatorRegistered(msg.sender, peerId, minStake);
        token.safeTransferFrom(msg.sender, address(this), minStake);
    }

    /// @inheritdoc ITrainingPool
    function unregisterCoordinator() external nonReentrant {
        Coordinator storage c = _coordinators[msg.sender];
        if (!c.registered) revert TrainingPoolNotRegistered(msg.sender);
        if (c.liveJobs != 0) revert TrainingPoolCoordinatorBusy(msg.sender, c.liveJobs);
        uint256 stake = c.stake;
        delete _coordinators[msg.sender];
        emit CoordinatorUnregistered(msg.sender, stake);
        token.safeTransfer(msg.sender, stake);
    }

    // ------------------------------------------------------------------ requesters

    /// @inheritdoc ITrainingPool
    function createTrainingJob(JobSpec calldata spec) external nonReentrant returns (uint256 jobId) {
        _checkSpec(spec);
        jobId = ++_jobCount;
        Job storage job = _jobs[jobId];
        job.spec = spec;
        job.requester = msg.sender;
        job.createdAt = _now();
        emit TrainingJobCreated(
            jobId, msg.sender, spec.modelHash, spec.specHash, spec.totalRewardPool, spec.rounds, spec.clusterId
        );
        token.safeTransferFrom(msg.sender, address(this), spec.totalRewardPool);
    }

    /// @inheritdoc ITrainingPool
    function finishJob(uint256 jobId) external nonReentrant returns (uint256 refund) {
        Job storage job = _existingJob(jobId);
        if (job.finished) revert TrainingPoolJobOver(jobId);
        bool claimsClosed = job.completedAt != 0 && block.timestamp > job.completedAt + job.spec.claimWindow;
        bool requesterAfterDeadline = msg.sender == job.requester && block.timestamp > job.spec.deadline;
        if (!claimsClosed && !requesterAfterDeadline) revert TrainingPoolCannotFinish(jobId, msg.sender);

        if (job.completedAt == 0 && job.holder != address(0)) {
            // The job ends unfinished: its holder no longer holds a live job.
            _coordinators[job.holder].liveJobs -= 1;
        }
        refund = job.spec.totalRewardPool - job.paid;
        job.finished = true;
        job.refunded = refund;
        emit TrainingJobFinished(jobId, refund);
        if (refund > 0) token.safeTransfer(job.requester, refund);
    }

    // ------------------------------------------------------------------ terms and rounds

    /// @inheritdoc ITrainingPool
    function claimTerm(uint256 jobId) external returns (uint64 term) {
        Coordinator storage c = _coordinators[msg.sender];
        if (!c.registered) revert TrainingPoolNotRegistered(msg.sender);
        Job storage job = _existingJob(jobId);
        if (job.finished || job.completedAt != 0) revert TrainingPoolJobOver(jobId);
        address previous = job.holder;
        if (previous != address(0)) {
            uint64 leaseEnd = job.lastActivity + job.spec.leaseSeconds;
            if (block.timestamp <= leaseEnd) revert TrainingPoolLeaseActive(jobId, job.term, previous, leaseEnd);
            _coordinators[previous].liveJobs -= 1;
        }
        term = job.term + 1;
        job.term = term;
        job.holder = msg.sender;
        job.lastActivity = _now();
        _termHolders[jobId][term] = msg.sender;
        c.liveJobs += 1;
        emit TermClaimed(jobId, term, msg.sender);
    }

    /// @inheritdoc ITrainingPool
    function renewLease(uint256 jobId) external {
        Job storage job = _holderJob(jobId);
        job.lastActivity = _now();
        emit LeaseRenewed(jobId, job.term, job.lastActivity + job.spec.leaseSeconds);
    }

    /// @inheritdoc ITrainingPool
    function recordRound(uint256 jobId, uint64 round, bytes32 globalModelHash, uint16 accuracyBps) external {
        Job storage job = _holderJob(jobId);
        uint64 expected = job.lastRound + 1;
        if (round != expected) revert TrainingPoolUnexpectedRound(jobId, round, expected);
        if (accuracyBps > MAX_BPS) revert TrainingPoolInvalidAccuracy(accuracyBps);
        uint64 now_ = _now();
        job.lastRound = round;
        job.lastActivity = now_;
        RoundRecord storage record = _rounds[jobId][round];
        record.globalModelHash = globalModelHash;
        record.accuracyBps = accuracyBps;
        record.term = job.term;
        record.recordedAt = now_;
        emit RoundRecorded(jobId, round, job.term, globalModelHash, accuracyBps);
        if (round == job.spec.rounds) {
            job.completedAt = now_;
            _coordinators[msg.sender].liveJobs -= 1;
            emit TrainingJobCompleted(jobId, now_);
        }
    }

    // ------------------------------------------------------------------ contributors

    /// @inheritdoc ITrainingPool
    function submitUpdate(
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        uint16 accuracyBps,
        uint64 term,
        bytes calldata signature
    ) external nonReentrant returns (uint256 reward) {
        Job storage job = _existingJob(jobId);
        if (!_acceptsClaims(job)) revert TrainingPoolJobOver(jobId);
        if (round == 0 || round > job.spec.rounds) revert TrainingPoolRoundOutOfRange(jobId, round, job.spec.rounds);
        if (term != job.term || term == 0) revert TrainingPoolStaleTerm(jobId, term, job.term);
        if (accuracyBps > MAX_BPS) revert TrainingPoolInvalidAccuracy(accuracyBps);
        if (accuracyBps < job.spec.minAccuracyBps) {
            revert TrainingPoolAccuracyBelowMinimum(jobId, accuracyBps, job.spec.minAccuracyBps);
        }
        address signer = _recover(jobId, round, updateHash, msg.sender, accuracyBps, term, signature);
        if (signer != job.holder) revert TrainingPoolInvalidSignature(jobId, signer, job.holder);
        uint256 clusterId = job.spec.clusterId;
        if (clusterId != 0 && !marketplace.isActiveClusterProvider(clusterId, msg.sender)) {
            revert TrainingPoolNotClusterMember(jobId, clusterId, msg.sender);
        }
        if (_rewardedUpdates[jobId][updateHash]) revert TrainingPoolUpdateAlreadyRewarded(jobId, updateHash);
        if (_rewardedInRound[jobId][round][msg.sender]) {
            revert TrainingPoolContributorAlreadyRewarded(jobId, round, msg.sender);
        }
        RoundRecord storage record = _rounds[jobId][round];
        if (record.updatesPaid >= job.spec.maxUpdatesPerRound) {
            revert TrainingPoolRoundFull(jobId, round, job.spec.maxUpdatesPerRound);
        }

        reward = _rewardPerUpdate(job.spec);
        _rewardedUpdates[jobId][updateHash] = true;
        _rewardedInRound[jobId][round][msg.sender] = true;
        record.updatesPaid += 1;
        // Cannot exceed the pool: creation required pool >= reward x slots x rounds.
        job.paid += reward;
        emit RewardDistributed(msg.sender, jobId, round, updateHash, reward);
        token.safeTransfer(msg.sender, reward);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc ITrainingPool
    function verifyProof(
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        address contributor,
        uint16 accuracyBps,
        uint64 term,
        bytes calldata signature
    ) external view returns (bool) {
        Job storage job = _existingJob(jobId);
        if (term == 0 || term != job.term) return false;
        if (accuracyBps > MAX_BPS || accuracyBps < job.spec.minAccuracyBps) return false;
        return _recover(jobId, round, updateHash, contributor, accuracyBps, term, signature) == job.holder;
    }

    /// @inheritdoc ITrainingPool
    function attestationDigest(
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        address contributor,
        uint16 accuracyBps,
        uint64 term
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(ATTESTATION_TYPEHASH, jobId, round, updateHash, contributor, accuracyBps, term))
        );
    }

    /// @inheritdoc ITrainingPool
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @inheritdoc ITrainingPool
    function getJob(uint256 jobId) external view returns (Job memory) {
        return _existingJob(jobId);
    }

    /// @inheritdoc ITrainingPool
    function jobCount() external view returns (uint256) {
        return _jobCount;
    }

    /// @inheritdoc ITrainingPool
    function currentTerm(uint256 jobId)
        external
        view
        returns (uint64 term, address holder, uint64 lastActivity, uint64 leaseSeconds, bool live)
    {
        Job storage job = _existingJob(jobId);
        term = job.term;
        holder = job.holder;
        lastActivity = job.lastActivity;
        leaseSeconds = job.spec.leaseSeconds;
        live = holder != address(0) && !job.finished && job.completedAt == 0
            && block.timestamp <= uint256(lastActivity) + leaseSeconds;
    }

    /// @inheritdoc ITrainingPool
    function termHolder(uint256 jobId, uint64 term) external view returns (address) {
        return _termHolders[jobId][term];
    }

    /// @inheritdoc ITrainingPool
    function getRound(uint256 jobId, uint64 round) external view returns (RoundRecord memory) {
        return _rounds[jobId][round];
    }

    /// @inheritdoc ITrainingPool
    function coordinator(address account) external view returns (Coordinator memory) {
        return _coordinators[account];
    }

    /// @inheritdoc ITrainingPool
    function rewardPerAcceptedUpdate(uint256 jobId) external view returns (uint256) {
        return _rewardPerUpdate(_existingJob(jobId).spec);
    }

    /// @inheritdoc ITrainingPool
    function isUpdateRewarded(uint256 jobId, bytes32 updateHash) external view returns (bool) {
        return _rewardedUpdates[jobId][updateHash];
    }

    // ------------------------------------------------------------------ internal

    function _checkSpec(JobSpec calldata spec) private view {
        if (spec.modelHash == bytes32(0)) revert TrainingPoolInvalidSpec("modelHash");
        if (spec.validationHash == bytes32(0)) revert TrainingPoolInvalidSpec("validationHash");
        if (bytes(spec.specUri).length > MAX_URI_BYTES) revert TrainingPoolInvalidSpec("specUri");
        if (spec.rounds == 0 || spec.rounds > MAX_ROUNDS) revert TrainingPoolInvalidSpec("rounds");
        if (spec.maxUpdatesPerRound == 0 || spec.maxUpdatesPerRound > MAX_UPDATES_PER_ROUND) {
            revert TrainingPoolInvalidSpec("maxUpdatesPerRound");
        }
        if (spec.minAccuracyBps > MAX_BPS) revert TrainingPoolInvalidSpec("minAccuracyBps");
        if (spec.rewardMode == RewardMode.PerUpdate) {
            if (spec.rewardPerUpdate == 0) revert TrainingPoolInvalidSpec("rewardPerUpdate");
            if (spec.rewardPerRound != 0) revert TrainingPoolInvalidSpec("rewardPerRound");
        } else {
            // Each slot must pay something: rewardPerRound / maxUpdatesPerRound >= 1.
            if (spec.rewardPerRound < spec.maxUpdatesPerRound) revert TrainingPoolInvalidSpec("rewardPerRound");
            if (spec.rewardPerUpdate != 0) revert TrainingPoolInvalidSpec("rewardPerUpdate");
        }
        if (spec.leaseSeconds == 0 || spec.leaseSeconds > MAX_LEASE_SECONDS) {
            revert TrainingPoolInvalidSpec("leaseSeconds");
        }
        if (spec.claimWindow > MAX_CLAIM_WINDOW) revert TrainingPoolInvalidSpec("claimWindow");
        if (spec.deadline <= block.timestamp || spec.deadline > block.timestamp + MAX_JOB_DURATION) {
            revert TrainingPoolInvalidSpec("deadline");
        }
        uint256 needed = _rewardPerUpdate(spec) * spec.maxUpdatesPerRound * spec.rounds;
        if (spec.totalRewardPool < needed) revert TrainingPoolInvalidSpec("totalRewardPool");
        if (spec.clusterId != 0 && marketplace.clusterRenter(spec.clusterId) == address(0)) {
            revert TrainingPoolUnknownCluster(spec.clusterId);
        }
    }

    function _rewardPerUpdate(JobSpec memory spec) private pure returns (uint256) {
        return
            spec.rewardMode == RewardMode.PerUpdate
                ? spec.rewardPerUpdate
                : spec.rewardPerRound / spec.maxUpdatesPerRound;
    }

    /// @dev Claims are open until the job is finished or the claim window after completion closes.
    function _acceptsClaims(Job storage job) private view returns (bool) {
        if (job.finished) return false;
        return job.completedAt == 0 || block.timestamp <= uint256(job.completedAt) + job.spec.claimWindow;
    }

    function _recover(
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        address contributor,
        uint16 accuracyBps,
        uint64 term,
        bytes calldata signature
    ) private view returns (address signer) {
        bytes32 digest = attestationDigest(jobId, round, updateHash, contributor, accuracyBps, term);
        (signer,,) = ECDSA.tryRecoverCalldata(digest, signature);
    }

    function _existingJob(uint256 jobId) private view returns (Job storage job) {
        if (jobId == 0 || jobId > _jobCount) revert TrainingPoolUnknownJob(jobId);
        job = _jobs[jobId];
    }

    /// @dev The job, if the caller holds its current term and the job is still running.
    function _holderJob(uint256 jobId) private view returns (Job storage job) {
        job = _existingJob(jobId);
        if (job.finished || job.completedAt != 0) revert TrainingPoolJobOver(jobId);
        if (job.holder != msg.sender) revert TrainingPoolNotTermHolder(jobId, msg.sender, job.holder);
    }

    function _now() private view returns (uint64) {
        // Safe: unix seconds fit 64 bits for billions of years.
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64(block.timestamp);
    }
}
