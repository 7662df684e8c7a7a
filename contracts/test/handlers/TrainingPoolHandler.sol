// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../utils/Test.sol";
import {DuckToken} from "../../src/DuckToken.sol";
import {TrainingPool} from "../../src/TrainingPool.sol";
import {ITrainingPool} from "../../src/interfaces/ITrainingPool.sol";

/// @notice Drives the training pool through jobs, coordinator terms (with lease expiry and
/// takeovers), signed updates and finishes, keeping ghost sums of every token moved.
contract TrainingPoolHandler is Test {
    DuckToken public immutable token;
    TrainingPool public immutable pool;
    address[] public requesters;
    address[] public coordinators;
    uint256[] internal _coordinatorKeys;
    address[] public contributors;

    uint256 public ghost_poolsDeposited;
    uint256 public ghost_stakesDeposited;
    uint256 public ghost_rewardsPaid;
    uint256 public ghost_refunded;
    uint256 public ghost_stakesReturned;
    uint256 public ghost_updates;

    constructor(
        DuckToken token_,
        TrainingPool pool_,
        address[] memory requesters_,
        uint256[] memory coordinatorKeys_,
        address[] memory contributors_
    ) {
        token = token_;
        pool = pool_;
        requesters = requesters_;
        _coordinatorKeys = coordinatorKeys_;
        for (uint256 i = 0; i < coordinatorKeys_.length; ++i) {
            coordinators.push(vm.addr(coordinatorKeys_[i]));
        }
        contributors = contributors_;
    }

    function coordinatorCount() external view returns (uint256) {
        return coordinators.length;
    }

    function createJob(
        uint256 requesterSeed,
        uint256 rounds,
        uint256 reward,
        bool perRound,
        uint256 slots,
        uint256 duration
    ) external {
        address requester = requesters[requesterSeed % requesters.length];
        ITrainingPool.JobSpec memory spec;
        spec.modelHash = keccak256(abi.encode("model", pool.jobCount()));
        spec.validationHash = keccak256("validation");
        spec.rounds = uint64(bound(rounds, 1, 4));
        spec.maxUpdatesPerRound = uint32(bound(slots, 1, 3));
        spec.minAccuracyBps = 7_000;
        reward = bound(reward, 1, 1e22);
        if (perRound) {
            spec.rewardMode = ITrainingPool.RewardMode.PerRound;
            spec.rewardPerRound = reward * spec.maxUpdatesPerRound + reward % spec.maxUpdatesPerRound; // split dust
        } else {
            spec.rewardPerUpdate = reward;
        }
        spec.totalRewardPool = reward * spec.maxUpdatesPerRound * spec.rounds + reward % 11;
        spec.leaseSeconds = 30;
        spec.claimWindow = 1 hours;
        spec.deadline = uint64(block.timestamp + bound(duration, 1 hours, 1 days));
        vm.prank(requester);
        pool.createTrainingJob(spec);
        ghost_poolsDeposited += spec.totalRewardPool;
    }

    function register(uint256 coordSeed) external {
        address c = coordinators[coordSeed % coordinators.length];
        if (pool.coordinator(c).registered) return;
        vm.prank(c);
        pool.registerCoordinator(abi.encodePacked("peer-", c));
        ghost_stakesDeposited += pool.minStake();
    }

    function unregister(uint256 coordSeed) external {
        address c = coordinators[coordSeed % coordinators.length];
        ITrainingPool.Coordinator memory info = pool.coordinator(c);
        if (!info.registered || info.liveJobs != 0) return;
        vm.prank(c);
        pool.unregisterCoordinator();
        ghost_stakesReturned += info.stake;
    }

    function claimTerm(uint256 jobSeed, uint256 coordSeed) external {
        (bool ok, uint256 jobId) = _job(jobSeed);
        if (!ok) return;
        address c = coordinators[coordSeed % coordinators.length];
        if (!pool.coordinator(c).registered) {
            vm.prank(c);
            pool.registerCoordinator(abi.encodePacked("peer-", c));
            ghost_stakesDeposited += pool.minStake();
        }
        ITrainingPool.Job memory job = pool.getJob(jobId);
        if (job.finished || job.completedAt != 0) return;
        (,,,, bool live) = pool.currentTerm(jobId);
        if (live) return;
        vm.prank(c);
        pool.claimTerm(jobId);
    }

    function renewLease(uint256 jobSeed) external {
        (bool ok, uint256 jobId) = _job(jobSeed);
        if (!ok) return;
        ITrainingPool.Job memory job = pool.getJob(jobId);
        if (job.holder == address(0) || job.finished || job.completedAt != 0) return;
        vm.prank(job.holder);
        pool.renewLease(jobId);
    }

    function recordRound(uint256 jobSeed, uint16 accuracy) external {
        (bool ok, uint256 jobId) = _job(jobSeed);
        if (!ok) return;
        ITrainingPool.Job memory job = pool.getJob(jobId);
        if (job.holder == address(0) || job.finished || job.completedAt != 0) return;
        vm.prank(job.holder);
        pool.recordRound(
            jobId, job.lastRound + 1, keccak256(abi.encode(jobId, job.lastRound)), uint16(bound(accuracy, 0, 10_000))
        );
    }

    function submitUpdate(uint256 jobSeed, uint256 contributorSeed, uint64 round, uint16 accuracy) external {
        (bool ok, uint256 jobId) = _job(jobSeed);
        if (!ok) return;
        ITrainingPool.Job memory job = pool.getJob(jobId);
        if (job.term == 0 || job.finished) return;
        if (job.completedAt != 0 && block.timestamp > job.completedAt + job.spec.claimWindow) return;
        round = uint64(bound(round, 1, job.spec.rounds));
        if (pool.getRound(jobId, round).updatesPaid >= job.spec.maxUpdatesPerRound) return;
        address contributor = contributors[contributorSeed % contributors.length];
        uint16 acc = uint16(bound(accuracy, 7_000, 10_000));
        bytes32 updateHash = keccak256(abi.encode(jobId, round, contributor));
        if (pool.isUpdateRewarded(jobId, updateHash)) return;
        bytes memory sig = _sign(job.holder, jobId, round, updateHash, contributor, acc, job.term);
        uint256 before = token.balanceOf(contributor);
        vm.prank(contributor);
        pool.submitUpdate(jobId, round, updateHash, acc, job.term, sig);
        ghost_rewardsPaid += token.balanceOf(contributor) - before;
        ++ghost_updates;
    }

    function finishJob(uint256 jobSeed) external {
        (bool ok, uint256 jobId) = _job(jobSeed);
        if (!ok) return;
        ITrainingPool.Job memory job = pool.getJob(jobId);
        if (job.finished) return;
        bool claimsClosed = job.completedAt != 0 && block.timestamp > job.completedAt + job.spec.claimWindow;
        bool pastDeadline = block.timestamp > job.spec.deadline;
        if (!claimsClosed && !pastDeadline) return;
        vm.prank(job.requester);
        ghost_refunded += pool.finishJob(jobId);
    }

    function warp(uint256 secondsAhead) external {
        vm.warp(block.timestamp + bound(secondsAhead, 1, 30 minutes));
    }

    function _sign(
        address holder,
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        address contributor,
        uint16 acc,
        uint64 term
    ) private view returns (bytes memory) {
        bytes32 digest = pool.attestationDigest(jobId, round, updateHash, contributor, acc, term);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(_keyOf(holder), digest);
        return abi.encodePacked(r, s, v);
    }

    function _job(uint256 seed) private view returns (bool, uint256) {
        uint256 count = pool.jobCount();
        if (count == 0) return (false, 0);
        return (true, 1 + seed % count);
    }

    function _keyOf(address coordinator) private view returns (uint256) {
        for (uint256 i = 0; i < coordinators.length; ++i) {
            if (coordinators[i] == coordinator) return _coordinatorKeys[i];
        }
        revert("unknown coordinator");
    }
}
