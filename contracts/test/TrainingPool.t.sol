// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

import {Fixture} from "./utils/Fixture.sol";
import {ITrainingPool} from "../src/interfaces/ITrainingPool.sol";

contract TrainingPoolTest is Fixture {
    bytes32 internal constant UPDATE_A = keccak256("update-a");
    bytes32 internal constant UPDATE_B = keccak256("update-b");

    /// @dev A job with coord1 holding term 1.
    function _runningJob() internal returns (uint256 jobId) {
        jobId = _createJob(_jobSpec());
        _register(coord1);
        _claim(coord1, jobId);
    }

    function _expectRevert(bytes memory data) internal {
        vm.expectRevert(data);
    }

    // ------------------------------------------------------------------ registerCoordinator

    function test_registerCoordinator_pullsStakeAndEmits() public {
        uint256 before = token.balanceOf(coord1);
        vm.expectEmit(true, false, false, true, address(pool));
        emit ITrainingPool.CoordinatorRegistered(coord1, "peer-1", MIN_STAKE);
        vm.prank(coord1);
        pool.registerCoordinator("peer-1");
        ITrainingPool.Coordinator memory c = pool.coordinator(coord1);
        assertTrue(c.registered, "registered");
        assertEq(c.stake, MIN_STAKE, "stake");
        assertEq(c.peerId, bytes("peer-1"), "peer id");
        assertEq(token.balanceOf(coord1), before - MIN_STAKE, "stake pulled");
        assertEq(token.balanceOf(address(pool)), MIN_STAKE, "stake held");
    }

    function test_registerCoordinator_revertsWhenAlreadyRegistered() public {
        _register(coord1);
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolAlreadyRegistered.selector, coord1));
        pool.registerCoordinator("again");
    }

    function test_registerCoordinator_revertsOnEmptyPeerId() public {
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolInvalidPeerId.selector, 0));
        pool.registerCoordinator("");
    }

    function test_registerCoordinator_revertsOnOversizedPeerId() public {
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolInvalidPeerId.selector, 129));
        pool.registerCoordinator(new bytes(129));
    }

    function test_registerCoordinator_revertsWithoutAllowance() public {
        address poor = makeAddr("poor");
        token.mint(poor, MIN_STAKE);
        vm.prank(poor);
        _expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(pool), 0, MIN_STAKE)
        );
        pool.registerCoordinator("peer");
    }

    // ------------------------------------------------------------------ unregisterCoordinator

    function test_unregisterCoordinator_returnsStake() public {
        _register(coord1);
        uint256 before = token.balanceOf(coord1);
        vm.expectEmit(true, false, false, true, address(pool));
        emit ITrainingPool.CoordinatorUnregistered(coord1, MIN_STAKE);
        vm.prank(coord1);
        pool.unregisterCoordinator();
        assertEq(token.balanceOf(coord1), before + MIN_STAKE, "stake back");
        assertFalse(pool.coordinator(coord1).registered, "unregistered");
    }

    function test_unregisterCoordinator_revertsWhenNotRegistered() public {
        vm.prank(stranger);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolNotRegistered.selector, stranger));
        pool.unregisterCoordinator();
    }

    function test_unregisterCoordinator_revertsWhileHoldingAJob() public {
        _runningJob();
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolCoordinatorBusy.selector, coord1, 1));
        pool.unregisterCoordinator();
    }

    function test_unregisterCoordinator_succeedsAfterTheJobCompleted() public {
        uint256 jobId = _runningJob();
        vm.startPrank(coord1);
        pool.recordRound(jobId, 1, keccak256("g1"), 8_000);
        pool.recordRound(jobId, 2, keccak256("g2"), 8_500);
        pool.recordRound(jobId, 3, keccak256("g3"), 9_000);
        pool.unregisterCoordinator();
        vm.stopPrank();
        assertFalse(pool.coordinator(coord1).registered, "unregistered");
    }

    function test_unregisterCoordinator_succeedsAfterBeingReplaced() public {
        uint256 jobId = _runningJob();
        _register(coord2);
        vm.warp(block.timestamp + 11);
        _claim(coord2, jobId);
        vm.prank(coord1);
        pool.unregisterCoordinator();
        assertEq(pool.coordinator(coord2).liveJobs, 1, "new holder counted");
    }

    // ------------------------------------------------------------------ createTrainingJob

    function test_createTrainingJob_pullsDepositAndEmits() public {
        ITrainingPool.JobSpec memory spec = _jobSpec();
        uint256 before = token.balanceOf(requester);
        vm.expectEmit(true, true, false, true, address(pool));
        emit ITrainingPool.TrainingJobCreated(1, requester, spec.modelHash, spec.specHash, 1_000 * DUCK, 3, 0);
        uint256 jobId = _createJob(spec);
        assertEq(jobId, 1, "first job");
        assertEq(pool.jobCount(), 1, "count");
        assertEq(token.balanceOf(requester), before - 1_000 * DUCK, "deposit pulled");
        assertEq(token.balanceOf(address(pool)), 1_000 * DUCK, "deposit held");
        ITrainingPool.Job memory job = pool.getJob(jobId);
        assertEq(job.requester, requester, "requester");
        assertEq(job.spec.modelHash, spec.modelHash, "model hash");
        assertEq(job.spec.validationHash, spec.validationHash, "validation hash");
        assertEq(uint256(job.spec.rounds), 3, "rounds");
        assertEq(job.createdAt, block.timestamp, "created at");
        assertEq(uint256(job.term), 0, "no term yet");
        assertEq(pool.rewardPerAcceptedUpdate(jobId), 10 * DUCK, "reward per update");
    }

    function _expectInvalidSpec(ITrainingPool.JobSpec memory spec, string memory field) internal {
        vm.prank(requester);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolInvalidSpec.selector, field));
        pool.createTrainingJob(spec);
    }

    function test_createTrainingJob_revertsOnInvalidSpecFields() public {
        ITrainingPool.JobSpec memory s = _jobSpec();
        s.modelHash = 0;
        _expectInvalidSpec(s, "modelHash");
        s = _jobSpec();
        s.validationHash = 0;
        _expectInvalidSpec(s, "validationHash");
        s = _jobSpec();
        s.specUri = string(new bytes(513));
        _expectInvalidSpec(s, "specUri");
        s = _jobSpec();
        s.rounds = 0;
        _expectInvalidSpec(s, "rounds");
        s = _jobSpec();
        s.rounds = 10_001;
        _expectInvalidSpec(s, "rounds");
        s = _jobSpec();
        s.maxUpdatesPerRound = 0;
        _expectInvalidSpec(s, "maxUpdatesPerRound");
        s = _jobSpec();
        s.minAccuracyBps = 10_001;
        _expectInvalidSpec(s, "minAccuracyBps");
        s = _jobSpec();
        s.rewardPerUpdate = 0;
        _expectInvalidSpec(s, "rewardPerUpdate");
        s = _jobSpec();
        s.rewardPerRound = 1;
        _expectInvalidSpec(s, "rewardPerRound");
        s = _jobSpec();
        s.rewardMode = ITrainingPool.RewardMode.PerRound;
        s.rewardPerRound = 3; // < 4 slots
        s.rewardPerUpdate = 0;
        _expectInvalidSpec(s, "rewardPerRound");
        s = _jobSpec();
        s.rewardMode = ITrainingPool.RewardMode.PerRound;
        s.rewardPerRound = 40 * DUCK; // rewardPerUpdate still set
        _expectInvalidSpec(s, "rewardPerUpdate");
        s = _jobSpec();
        s.leaseSeconds = 0;
        _expectInvalidSpec(s, "leaseSeconds");
        s = _jobSpec();
        s.leaseSeconds = 7 days + 1;
        _expectInvalidSpec(s, "leaseSeconds");
        s = _jobSpec();
        s.claimWindow = 91 days;
        _expectInvalidSpec(s, "claimWindow");
        s = _jobSpec();
        s.deadline = uint64(block.timestamp);
        _expectInvalidSpec(s, "deadline");
        s = _jobSpec();
        s.deadline = uint64(block.timestamp + 366 days);
        _expectInvalidSpec(s, "deadline");
        s = _jobSpec();
        s.totalRewardPool = 10 * DUCK * 4 * 3 - 1;
        _expectInvalidSpec(s, "totalRewardPool");
    }

    function test_createTrainingJob_revertsForUnknownCluster() public {
        ITrainingPool.JobSpec memory s = _jobSpec();
        s.clusterId = 5;
        vm.prank(requester);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolUnknownCluster.selector, 5));
        pool.createTrainingJob(s);
    }

    function test_createTrainingJob_revertsWithoutAllowance() public {
        address poor = makeAddr("poor");
        token.mint(poor, 1_000 * DUCK);
        vm.prank(poor);
        _expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(pool), 0, 1_000 * DUCK)
        );
        pool.createTrainingJob(_jobSpec());
    }

    function test_createTrainingJob_perRoundModeSplitsTheRoundReward() public {
        ITrainingPool.JobSpec memory s = _jobSpec();
        s.rewardMode = ITrainingPool.RewardMode.PerRound;
        s.rewardPerUpdate = 0;
        s.rewardPerRound = 41 * DUCK; // 4 slots: 10.25 DUCK each
        s.totalRewardPool = 123 * DUCK;
        uint256 jobId = _createJob(s);
        assertEq(pool.rewardPerAcceptedUpdate(jobId), 41 * DUCK / 4, "split");
    }

    // ------------------------------------------------------------------ claimTerm

    function test_claimTerm_startsTermOne() public {
        uint256 jobId = _createJob(_jobSpec());
        _register(coord1);
        vm.expectEmit(true, true, true, true, address(pool));
        emit ITrainingPool.TermClaimed(jobId, 1, coord1);
        uint64 term = _claim(coord1, jobId);
        assertEq(uint256(term), 1, "term");
        (uint64 t, address holder, uint64 last, uint64 lease, bool live) = pool.currentTerm(jobId);
        assertEq(uint256(t), 1, "current term");
        assertEq(holder, coord1, "holder");
        assertEq(last, block.timestamp, "last activity");
        assertEq(uint256(lease), 10, "lease");
        assertTrue(live, "live");
        assertEq(pool.termHolder(jobId, 1), coord1, "term holder");
        assertEq(pool.coordinator(coord1).liveJobs, 1, "live jobs");
    }

    function test_claimTerm_revertsForUnregisteredCaller() public {
        uint256 jobId = _createJob(_jobSpec());
        vm.prank(stranger);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolNotRegistered.selector, stranger));
        pool.claimTerm(jobId);
    }

    function test_claimTerm_revertsWhileLeaseIsLive() public {
        uint256 jobId = _runningJob();
        _register(coord2);
        uint64 leaseEnd = uint64(block.timestamp + 10);
        vm.warp(leaseEnd); // lastActivity + lease == now: still live
        vm.prank(coord2);
        _expectRevert(
            abi.encodeWithSelector(ITrainingPool.TrainingPoolLeaseActive.selector, jobId, 1, coord1, leaseEnd)
        );
        pool.claimTerm(jobId);
    }

    function test_claimTerm_succeedsAfterLeaseExpiry() public {
        uint256 jobId = _runningJob();
        _register(coord2);
        vm.warp(block.timestamp + 11);
        (,,,, bool live) = pool.currentTerm(jobId);
        assertFalse(live, "lease ran out");
        uint64 term = _claim(coord2, jobId);
        assertEq(uint256(term), 2, "second term");
        (, address holder,,,) = pool.currentTerm(jobId);
        assertEq(holder, coord2, "new holder");
        assertEq(pool.termHolder(jobId, 1), coord1, "history kept");
        assertEq(pool.coordinator(coord1).liveJobs, 0, "old holder released");
        assertEq(pool.coordinator(coord2).liveJobs, 1, "new holder counted");
    }

    function test_claimTerm_revertsForUnknownJob() public {
        _register(coord1);
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolUnknownJob.selector, 4));
        pool.claimTerm(4);
    }

    function test_claimTerm_revertsForCompletedJob() public {
        uint256 jobId = _runningJob();
        _completeRounds(jobId);
        _register(coord2);
        vm.warp(block.timestamp + 100);
        vm.prank(coord2);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolJobOver.selector, jobId));
        pool.claimTerm(jobId);
    }

    function test_claimTerm_revertsForFinishedJob() public {
        uint256 jobId = _createJob(_jobSpec());
        vm.warp(block.timestamp + 8 days);
        vm.prank(requester);
        pool.finishJob(jobId);
        _register(coord1);
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolJobOver.selector, jobId));
        pool.claimTerm(jobId);
    }

    // ------------------------------------------------------------------ renewLease

    function test_renewLease_extendsTheLease() public {
        uint256 jobId = _runningJob();
        vm.warp(block.timestamp + 8);
        vm.expectEmit(true, true, false, true, address(pool));
        emit ITrainingPool.LeaseRenewed(jobId, 1, uint64(block.timestamp + 10));
        vm.prank(coord1);
        pool.renewLease(jobId);
        vm.warp(block.timestamp + 8);
        _register(coord2);
        vm.prank(coord2);
        vm.expectPartialRevert(ITrainingPool.TrainingPoolLeaseActive.selector);
        pool.claimTerm(jobId);
    }

    function test_renewLease_revertsForNonHolder() public {
        uint256 jobId = _runningJob();
        vm.prank(stranger);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolNotTermHolder.selector, jobId, stranger, coord1));
        pool.renewLease(jobId);
    }

    function test_renewLease_revertsForFencedHolder() public {
        uint256 jobId = _runningJob();
        _register(coord2);
        vm.warp(block.timestamp + 11);
        _claim(coord2, jobId);
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolNotTermHolder.selector, jobId, coord1, coord2));
        pool.renewLease(jobId);
    }

    // ------------------------------------------------------------------ recordRound

    function _completeRounds(uint256 jobId) internal {
        vm.startPrank(coord1);
        pool.recordRound(jobId, 1, keccak256("g1"), 8_000);
        pool.recordRound(jobId, 2, keccak256("g2"), 8_500);
        pool.recordRound(jobId, 3, keccak256("g3"), 9_000);
        vm.stopPrank();
    }

    function test_recordRound_storesTheRoundAndEmits() public {
        uint256 jobId = _runningJob();
        vm.warp(block.timestamp + 5);
        vm.expectEmit(true, true, false, true, address(pool));
        emit ITrainingPool.RoundRecorded(jobId, 1, 1, keccak256("g1"), 8_000);
        vm.prank(coord1);
        pool.recordRound(jobId, 1, keccak256("g1"), 8_000);
        ITrainingPool.RoundRecord memory r = pool.getRound(jobId, 1);
        assertEq(r.globalModelHash, keccak256("g1"), "hash");
        assertEq(uint256(r.accuracyBps), 8_000, "accuracy");
        assertEq(uint256(r.term), 1, "term");
        assertEq(r.recordedAt, block.timestamp, "time");
        assertEq(uint256(pool.getJob(jobId).lastRound), 1, "last round");
        (,, uint64 last,,) = pool.currentTerm(jobId);
        assertEq(last, block.timestamp, "lease renewed");
    }

    function test_recordRound_completesTheJobOnTheLastRound() public {
        uint256 jobId = _runningJob();
        vm.startPrank(coord1);
        pool.recordRound(jobId, 1, keccak256("g1"), 8_000);
        pool.recordRound(jobId, 2, keccak256("g2"), 8_500);
        vm.expectEmit(true, false, false, true, address(pool));
        emit ITrainingPool.TrainingJobCompleted(jobId, uint64(block.timestamp));
        pool.recordRound(jobId, 3, keccak256("g3"), 9_000);
        vm.stopPrank();
        assertEq(pool.getJob(jobId).completedAt, block.timestamp, "completed");
        assertEq(pool.coordinator(coord1).liveJobs, 0, "holder released");
        (,,,, bool live) = pool.currentTerm(jobId);
        assertFalse(live, "no live term after completion");
    }

    function test_recordRound_keepsTheLeaseAlive() public {
        uint256 jobId = _runningJob();
        _register(coord2);
        for (uint64 round = 1; round <= 2; ++round) {
            vm.warp(block.timestamp + 9);
            vm.prank(coord1);
            pool.recordRound(jobId, round, keccak256(abi.encode(round)), 8_000);
        }
        vm.warp(block.timestamp + 9); // 27 s after the claim, 9 s after the last round
        vm.prank(coord2);
        vm.expectPartialRevert(ITrainingPool.TrainingPoolLeaseActive.selector);
        pool.claimTerm(jobId);
    }

    function test_recordRound_revertsForNonHolder() public {
        uint256 jobId = _runningJob();
        vm.prank(stranger);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolNotTermHolder.selector, jobId, stranger, coord1));
        pool.recordRound(jobId, 1, keccak256("g1"), 8_000);
    }

    function test_recordRound_revertsForFencedHolder() public {
        uint256 jobId = _runningJob();
        _register(coord2);
        vm.warp(block.timestamp + 11);
        _claim(coord2, jobId);
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolNotTermHolder.selector, jobId, coord1, coord2));
        pool.recordRound(jobId, 1, keccak256("g1"), 8_000);
    }

    function test_recordRound_revertsOnSkippedRound() public {
        uint256 jobId = _runningJob();
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolUnexpectedRound.selector, jobId, 2, 1));
        pool.recordRound(jobId, 2, keccak256("g2"), 8_000);
    }

    function test_recordRound_revertsOnRepeatedRound() public {
        uint256 jobId = _runningJob();
        vm.startPrank(coord1);
        pool.recordRound(jobId, 1, keccak256("g1"), 8_000);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolUnexpectedRound.selector, jobId, 1, 2));
        pool.recordRound(jobId, 1, keccak256("g1b"), 8_000);
        vm.stopPrank();
    }

    function test_recordRound_revertsOnAccuracyAboveOneHundredPercent() public {
        uint256 jobId = _runningJob();
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolInvalidAccuracy.selector, 10_001));
        pool.recordRound(jobId, 1, keccak256("g1"), 10_001);
    }

    function test_recordRound_revertsAfterCompletion() public {
        uint256 jobId = _runningJob();
        _completeRounds(jobId);
        vm.prank(coord1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolJobOver.selector, jobId));
        pool.recordRound(jobId, 4, keccak256("g4"), 9_000);
    }

    // ------------------------------------------------------------------ submitUpdate

    function test_submitUpdate_paysTheRewardAndEmits() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1);
        uint256 before = token.balanceOf(contributor1);
        vm.expectEmit(true, true, false, true, address(pool));
        emit ITrainingPool.RewardDistributed(contributor1, jobId, 1, UPDATE_A, 10 * DUCK);
        uint256 reward = _submit(contributor1, jobId, 1, UPDATE_A, 8_000, 1, sig);
        assertEq(reward, 10 * DUCK, "reward");
        assertEq(token.balanceOf(contributor1), before + 10 * DUCK, "paid");
        assertEq(pool.getJob(jobId).paid, 10 * DUCK, "job paid");
        assertEq(uint256(pool.getRound(jobId, 1).updatesPaid), 1, "round count");
        assertTrue(pool.isUpdateRewarded(jobId, UPDATE_A), "marked");
    }

    function test_submitUpdate_paysSplitRewardInPerRoundMode() public {
        ITrainingPool.JobSpec memory s = _jobSpec();
        s.rewardMode = ITrainingPool.RewardMode.PerRound;
        s.rewardPerUpdate = 0;
        s.rewardPerRound = 41 * DUCK;
        s.totalRewardPool = 123 * DUCK;
        uint256 jobId = _createJob(s);
        _register(coord1);
        _claim(coord1, jobId);
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1);
        assertEq(_submit(contributor1, jobId, 1, UPDATE_A, 8_000, 1, sig), 41 * DUCK / 4, "slot reward");
    }

    function test_submitUpdate_revertsOnReplayedUpdateHash() public {
        uint256 jobId = _runningJob();
        _submit(
            contributor1, jobId, 1, UPDATE_A, 8_000, 1, _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1)
        );
        // The same update, attested for another contributor, is still a replay.
        bytes memory sig = _attest(coord1Key, jobId, 2, UPDATE_A, contributor2, 8_000, 1);
        vm.prank(contributor2);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolUpdateAlreadyRewarded.selector, jobId, UPDATE_A));
        pool.submitUpdate(jobId, 2, UPDATE_A, 8_000, 1, sig);
    }

    function test_submitUpdate_revertsOnSecondUpdateInTheSameRound() public {
        uint256 jobId = _runningJob();
        _submit(
            contributor1, jobId, 1, UPDATE_A, 8_000, 1, _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1)
        );
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_B, contributor1, 8_000, 1);
        vm.prank(contributor1);
        _expectRevert(
            abi.encodeWithSelector(
                ITrainingPool.TrainingPoolContributorAlreadyRewarded.selector, jobId, 1, contributor1
            )
        );
        pool.submitUpdate(jobId, 1, UPDATE_B, 8_000, 1, sig);
    }

    function test_submitUpdate_revertsOnForgedSignature() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(strangerKey, jobId, 1, UPDATE_A, contributor1, 8_000, 1);
        vm.prank(contributor1);
        _expectRevert(
            abi.encodeWithSelector(ITrainingPool.TrainingPoolInvalidSignature.selector, jobId, stranger, coord1)
        );
        pool.submitUpdate(jobId, 1, UPDATE_A, 8_000, 1, sig);
    }

    function test_submitUpdate_revertsOnTamperedAccuracy() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 7_500, 1);
        vm.prank(contributor1);
        vm.expectPartialRevert(ITrainingPool.TrainingPoolInvalidSignature.selector);
        pool.submitUpdate(jobId, 1, UPDATE_A, 9_900, 1, sig);
    }

    function test_submitUpdate_revertsOnSignatureForAnotherContributor() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1);
        vm.prank(contributor2);
        vm.expectPartialRevert(ITrainingPool.TrainingPoolInvalidSignature.selector);
        pool.submitUpdate(jobId, 1, UPDATE_A, 8_000, 1, sig);
    }

    function test_submitUpdate_revertsOnMalformedSignature() public {
        uint256 jobId = _runningJob();
        vm.prank(contributor1);
        _expectRevert(
            abi.encodeWithSelector(ITrainingPool.TrainingPoolInvalidSignature.selector, jobId, address(0), coord1)
        );
        pool.submitUpdate(jobId, 1, UPDATE_A, 8_000, 1, hex"deadbeef");
    }

    function test_submitUpdate_revertsOnStaleTermSignature() public {
        uint256 jobId = _runningJob();
        bytes memory oldSig = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1);
        _register(coord2);
        vm.warp(block.timestamp + 11);
        _claim(coord2, jobId);
        vm.prank(contributor1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolStaleTerm.selector, jobId, 1, 2));
        pool.submitUpdate(jobId, 1, UPDATE_A, 8_000, 1, oldSig);
        // The old holder re-signing for the new term is a forgery; the new holder's counts.
        bytes memory wrong = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 2);
        vm.prank(contributor1);
        vm.expectPartialRevert(ITrainingPool.TrainingPoolInvalidSignature.selector);
        pool.submitUpdate(jobId, 1, UPDATE_A, 8_000, 2, wrong);
        bytes memory fresh = _attest(coord2Key, jobId, 1, UPDATE_A, contributor1, 8_000, 2);
        assertEq(_submit(contributor1, jobId, 1, UPDATE_A, 8_000, 2, fresh), 10 * DUCK, "re-attested");
    }

    function test_submitUpdate_revertsOnFutureTerm() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 2);
        vm.prank(contributor1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolStaleTerm.selector, jobId, 2, 1));
        pool.submitUpdate(jobId, 1, UPDATE_A, 8_000, 2, sig);
    }

    function test_submitUpdate_revertsBeforeAnyTerm() public {
        uint256 jobId = _createJob(_jobSpec());
        vm.prank(contributor1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolStaleTerm.selector, jobId, 0, 0));
        pool.submitUpdate(jobId, 1, UPDATE_A, 8_000, 0, "");
    }

    function test_submitUpdate_revertsOnAccuracyBelowThreshold() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 6_999, 1);
        vm.prank(contributor1);
        _expectRevert(
            abi.encodeWithSelector(ITrainingPool.TrainingPoolAccuracyBelowMinimum.selector, jobId, 6_999, 7_000)
        );
        pool.submitUpdate(jobId, 1, UPDATE_A, 6_999, 1, sig);
    }

    function test_submitUpdate_revertsOnAccuracyAboveOneHundredPercent() public {
        uint256 jobId = _runningJob();
        vm.prank(contributor1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolInvalidAccuracy.selector, 10_001));
        pool.submitUpdate(jobId, 1, UPDATE_A, 10_001, 1, "");
    }

    function test_submitUpdate_revertsOnRoundOutOfRange() public {
        uint256 jobId = _runningJob();
        vm.startPrank(contributor1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolRoundOutOfRange.selector, jobId, 0, 3));
        pool.submitUpdate(jobId, 0, UPDATE_A, 8_000, 1, "");
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolRoundOutOfRange.selector, jobId, 4, 3));
        pool.submitUpdate(jobId, 4, UPDATE_A, 8_000, 1, "");
        vm.stopPrank();
    }

    function test_submitUpdate_revertsWhenTheRoundIsFull() public {
        ITrainingPool.JobSpec memory s = _jobSpec();
        s.maxUpdatesPerRound = 1;
        uint256 jobId = _createJob(s);
        _register(coord1);
        _claim(coord1, jobId);
        _submit(
            contributor1, jobId, 1, UPDATE_A, 8_000, 1, _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1)
        );
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_B, contributor2, 8_000, 1);
        vm.prank(contributor2);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolRoundFull.selector, jobId, 1, 1));
        pool.submitUpdate(jobId, 1, UPDATE_B, 8_000, 1, sig);
    }

    function test_submitUpdate_acceptsClaimsWithinTheClaimWindow() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(coord1Key, jobId, 3, UPDATE_A, contributor1, 8_000, 1);
        _completeRounds(jobId);
        vm.warp(block.timestamp + 1 days);
        assertEq(_submit(contributor1, jobId, 3, UPDATE_A, 8_000, 1, sig), 10 * DUCK, "late claim");
    }

    function test_submitUpdate_revertsAfterTheClaimWindow() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(coord1Key, jobId, 3, UPDATE_A, contributor1, 8_000, 1);
        _completeRounds(jobId);
        vm.warp(block.timestamp + 1 days + 1);
        vm.prank(contributor1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolJobOver.selector, jobId));
        pool.submitUpdate(jobId, 3, UPDATE_A, 8_000, 1, sig);
    }

    function test_submitUpdate_revertsForFinishedJob() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1);
        vm.warp(block.timestamp + 8 days);
        vm.prank(requester);
        pool.finishJob(jobId);
        vm.prank(contributor1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolJobOver.selector, jobId));
        pool.submitUpdate(jobId, 1, UPDATE_A, 8_000, 1, sig);
    }

    function test_submitUpdate_revertsForUnknownJob() public {
        vm.prank(contributor1);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolUnknownJob.selector, 2));
        pool.submitUpdate(2, 1, UPDATE_A, 8_000, 1, "");
    }

    function test_submitUpdate_clusterJobPaysOnlyClusterProviders() public {
        (uint256 clusterId,) = _cluster(2);
        ITrainingPool.JobSpec memory s = _jobSpec();
        s.clusterId = clusterId;
        uint256 jobId = _createJob(s);
        _register(coord1);
        _claim(coord1, jobId);
        bytes memory outsider = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1);
        vm.prank(contributor1);
        _expectRevert(
            abi.encodeWithSelector(ITrainingPool.TrainingPoolNotClusterMember.selector, jobId, clusterId, contributor1)
        );
        pool.submitUpdate(jobId, 1, UPDATE_A, 8_000, 1, outsider);
        bytes memory member = _attest(coord1Key, jobId, 1, UPDATE_A, provider2, 8_000, 1);
        assertEq(_submit(provider2, jobId, 1, UPDATE_A, 8_000, 1, member), 10 * DUCK, "member paid");
    }

    // ------------------------------------------------------------------ verifyProof / digest

    function test_verifyProof_acceptsOnlyACurrentValidAttestation() public {
        uint256 jobId = _runningJob();
        bytes memory sig = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1);
        assertTrue(pool.verifyProof(jobId, 1, UPDATE_A, contributor1, 8_000, 1, sig), "valid");
        assertFalse(pool.verifyProof(jobId, 1, UPDATE_A, contributor2, 8_000, 1, sig), "other contributor");
        assertFalse(pool.verifyProof(jobId, 1, UPDATE_B, contributor1, 8_000, 1, sig), "other update");
        assertFalse(pool.verifyProof(jobId, 2, UPDATE_A, contributor1, 8_000, 1, sig), "other round");
        assertFalse(pool.verifyProof(jobId, 1, UPDATE_A, contributor1, 8_000, 2, sig), "other term");
        bytes memory low = _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 6_000, 1);
        assertFalse(pool.verifyProof(jobId, 1, UPDATE_A, contributor1, 6_000, 1, low), "below threshold");
        bytes memory forged = _attest(strangerKey, jobId, 1, UPDATE_A, contributor1, 8_000, 1);
        assertFalse(pool.verifyProof(jobId, 1, UPDATE_A, contributor1, 8_000, 1, forged), "forged");
        assertFalse(pool.verifyProof(jobId, 1, UPDATE_A, contributor1, 8_000, 1, hex"00"), "garbage");
    }

    function test_attestationDigest_isEip712OverTheAttestationStruct() public view {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("QuackMesh TrainingPool"),
                keccak256("1"),
                block.chainid,
                address(pool)
            )
        );
        assertEq(pool.domainSeparator(), domain, "domain separator");
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Attestation(uint256 jobId,uint64 round,bytes32 updateHash,address contributor,uint16 accuracyBps,uint64 term)"
                ),
                uint256(7),
                uint64(2),
                UPDATE_A,
                contributor1,
                uint16(8_123),
                uint64(3)
            )
        );
        bytes32 expected = keccak256(abi.encodePacked(hex"1901", domain, structHash));
        assertEq(pool.attestationDigest(7, 2, UPDATE_A, contributor1, 8_123, 3), expected, "digest");
    }

    // ------------------------------------------------------------------ finishJob

    function test_finishJob_refundsTheUnspentPoolAfterTheClaimWindow() public {
        uint256 jobId = _runningJob();
        _submit(
            contributor1, jobId, 1, UPDATE_A, 8_000, 1, _attest(coord1Key, jobId, 1, UPDATE_A, contributor1, 8_000, 1)
        );
        _completeRounds(jobId);
        vm.warp(block.timestamp + 1 days + 1);
        uint256 before = token.balanceOf(requester);
        vm.expectEmit(true, false, false, true, address(pool));
        emit ITrainingPool.TrainingJobFinished(jobId, 990 * DUCK);
        vm.prank(stranger); // anyone may close a completed job
        uint256 refund = pool.finishJob(jobId);
        assertEq(refund, 990 * DUCK, "refund");
        assertEq(token.balanceOf(requester), before + 990 * DUCK, "requester refunded");
        assertTrue(pool.getJob(jobId).finished, "finished");
        assertEq(pool.getJob(jobId).refunded, 990 * DUCK, "recorded");
        assertEq(token.balanceOf(address(pool)), MIN_STAKE, "only the stake remains");
    }

    function test_finishJob_revertsDuringTheClaimWindow() public {
        uint256 jobId = _runningJob();
        _completeRounds(jobId);
        vm.warp(block.timestamp + 1 days);
        vm.prank(stranger);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolCannotFinish.selector, jobId, stranger));
        pool.finishJob(jobId);
    }

    function test_finishJob_requesterMayFinishAStalledJobAfterTheDeadline() public {
        uint256 jobId = _runningJob();
        vm.warp(block.timestamp + 7 days + 1);
        vm.prank(requester);
        assertEq(pool.finishJob(jobId), 1_000 * DUCK, "full refund");
        assertEq(pool.coordinator(coord1).liveJobs, 0, "holder released");
    }

    function test_finishJob_revertsForRequesterBeforeTheDeadline() public {
        uint256 jobId = _runningJob();
        vm.prank(requester);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolCannotFinish.selector, jobId, requester));
        pool.finishJob(jobId);
    }

    function test_finishJob_revertsForOthersAfterTheDeadlineOfAnIncompleteJob() public {
        uint256 jobId = _runningJob();
        vm.warp(block.timestamp + 8 days);
        vm.prank(stranger);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolCannotFinish.selector, jobId, stranger));
        pool.finishJob(jobId);
    }

    function test_finishJob_revertsWhenAlreadyFinished() public {
        uint256 jobId = _createJob(_jobSpec());
        vm.warp(block.timestamp + 8 days);
        vm.startPrank(requester);
        pool.finishJob(jobId);
        _expectRevert(abi.encodeWithSelector(ITrainingPool.TrainingPoolJobOver.selector, jobId));
        pool.finishJob(jobId);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ fuzz

    /// Whatever is submitted, paid never exceeds the pool and pool = paid + refund at the end.
    function testFuzz_submitUpdate_paidPlusRefundEqualsPool(uint8 contributors, uint16 accuracy, uint96 reward) public {
        uint256 n = bound(contributors, 1, 6);
        ITrainingPool.JobSpec memory s = _jobSpec();
        s.rewardPerUpdate = bound(reward, 1, 1e24);
        s.maxUpdatesPerRound = 4;
        s.totalRewardPool = s.rewardPerUpdate * 4 * 3 + 17;
        token.mint(requester, s.totalRewardPool);
        uint256 jobId = _createJob(s);
        _register(coord1);
        _claim(coord1, jobId);
        uint16 acc = uint16(bound(accuracy, 0, 10_000));
        uint256 paidCount;
        for (uint256 i = 0; i < n; ++i) {
            address who = address(uint160(0x1000 + i));
            bytes32 update = keccak256(abi.encode("u", i));
            bytes memory sig = _attest(coord1Key, jobId, 1, update, who, acc, 1);
            bool ok = acc >= 7_000 && paidCount < 4;
            vm.prank(who);
            if (ok) {
                pool.submitUpdate(jobId, 1, update, acc, 1, sig);
                ++paidCount;
            } else {
                vm.expectPartialRevert(
                    acc < 7_000
                        ? ITrainingPool.TrainingPoolAccuracyBelowMinimum.selector
                        : ITrainingPool.TrainingPoolRoundFull.selector
                );
                pool.submitUpdate(jobId, 1, update, acc, 1, sig);
            }
        }
        ITrainingPool.Job memory job = pool.getJob(jobId);
        assertEq(job.paid, paidCount * s.rewardPerUpdate, "paid");
        assertLe(job.paid, s.totalRewardPool, "within pool");
        vm.warp(block.timestamp + 8 days);
        vm.prank(requester);
        uint256 refund = pool.finishJob(jobId);
        assertEq(job.paid + refund, s.totalRewardPool, "conservation");
        assertEq(token.balanceOf(address(pool)), MIN_STAKE, "only the stake remains");
    }
}
