// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

import {Fixture} from "./utils/Fixture.sol";
import {IInferencePool} from "../src/interfaces/IInferencePool.sol";

contract InferencePoolTest is Fixture {
    bytes32 internal constant MODEL = keccak256("model");
    bytes32 internal constant INPUT = keccak256("input");
    uint256 internal constant PER_SECOND = 2 * DUCK;

    uint256 internal clusterId;

    function setUp() public override {
        super.setUp();
        (clusterId,) = _cluster(2);
    }

    function _create(uint32 parts, uint256 maxPayment) internal returns (uint256 jobId) {
        vm.prank(renter);
        jobId = inference.createInferenceJob(MODEL, INPUT, clusterId, parts, PER_SECOND, maxPayment);
    }

    function _post(address who, uint256 jobId, uint32 part, uint64 millis) internal returns (uint256 paid) {
        vm.prank(who);
        paid = inference.postResult(jobId, part, keccak256(abi.encode(jobId, part)), millis);
    }

    // ------------------------------------------------------------------ createInferenceJob

    function test_createInferenceJob_pullsMaxPaymentAndEmits() public {
        uint256 before = token.balanceOf(renter);
        vm.expectEmit(true, true, true, true, address(inference));
        emit IInferencePool.InferenceJobCreated(1, renter, clusterId, MODEL, INPUT, 3, PER_SECOND, 100 * DUCK);
        uint256 jobId = _create(3, 100 * DUCK);
        assertEq(jobId, 1, "first job");
        assertEq(inference.jobCount(), 1, "count");
        assertEq(token.balanceOf(renter), before - 100 * DUCK, "deposit pulled");
        assertEq(token.balanceOf(address(inference)), 100 * DUCK, "deposit held");
        IInferencePool.InferenceJob memory job = inference.getInferenceJob(jobId);
        assertEq(job.requester, renter, "requester");
        assertEq(job.clusterId, clusterId, "cluster");
        assertEq(uint256(job.parts), 3, "parts");
        assertEq(job.maxPayment, 100 * DUCK, "max payment");
    }

    function test_createInferenceJob_revertsForNonRenter() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IInferencePool.InferencePoolNotClusterRenter.selector, clusterId, stranger)
        );
        inference.createInferenceJob(MODEL, INPUT, clusterId, 1, PER_SECOND, DUCK);
    }

    function test_createInferenceJob_revertsForUnknownCluster() public {
        vm.prank(renter);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolNotClusterRenter.selector, 99, renter));
        inference.createInferenceJob(MODEL, INPUT, 99, 1, PER_SECOND, DUCK);
    }

    function test_createInferenceJob_revertsForInactiveCluster() public {
        vm.warp(block.timestamp + 2 hours);
        vm.prank(renter);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolClusterInactive.selector, clusterId));
        inference.createInferenceJob(MODEL, INPUT, clusterId, 1, PER_SECOND, DUCK);
    }

    function test_createInferenceJob_revertsOnInvalidParts() public {
        vm.startPrank(renter);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolInvalidParts.selector, 0, 4096));
        inference.createInferenceJob(MODEL, INPUT, clusterId, 0, PER_SECOND, DUCK);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolInvalidParts.selector, 4097, 4096));
        inference.createInferenceJob(MODEL, INPUT, clusterId, 4097, PER_SECOND, DUCK);
        vm.stopPrank();
    }

    function test_createInferenceJob_revertsOnZeroAmounts() public {
        vm.startPrank(renter);
        vm.expectRevert(IInferencePool.InferencePoolZeroAmount.selector);
        inference.createInferenceJob(MODEL, INPUT, clusterId, 1, 0, DUCK);
        vm.expectRevert(IInferencePool.InferencePoolZeroAmount.selector);
        inference.createInferenceJob(MODEL, INPUT, clusterId, 1, PER_SECOND, 0);
        vm.stopPrank();
    }

    function test_createInferenceJob_revertsWithoutAllowance() public {
        vm.startPrank(renter);
        token.approve(address(inference), 0);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(inference), 0, DUCK)
        );
        inference.createInferenceJob(MODEL, INPUT, clusterId, 1, PER_SECOND, DUCK);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ postResult

    function test_postResult_paysComputeTimeAndEmits() public {
        uint256 jobId = _create(3, 100 * DUCK);
        uint256 before = token.balanceOf(provider2);
        bytes32 result = keccak256("result-0");
        vm.expectEmit(true, true, true, true, address(inference));
        emit IInferencePool.ResultPosted(jobId, 0, provider2, result, 1_500);
        vm.expectEmit(true, true, false, true, address(inference));
        emit IInferencePool.ComputePaid(jobId, provider2, 3 * DUCK);
        vm.prank(provider2);
        uint256 paid = inference.postResult(jobId, 0, result, 1_500);
        assertEq(paid, 3 * DUCK, "1.5 s x 2 DUCK/s");
        assertEq(token.balanceOf(provider2), before + 3 * DUCK, "provider paid");
        IInferencePool.PartResult memory r = inference.getResult(jobId, 0);
        assertEq(r.provider, provider2, "provider");
        assertEq(r.resultHash, result, "result");
        assertEq(uint256(r.computeMillis), 1_500, "millis");
        assertEq(r.payment, 3 * DUCK, "payment");
        IInferencePool.InferenceJob memory job = inference.getInferenceJob(jobId);
        assertEq(job.paid, 3 * DUCK, "job paid");
        assertEq(uint256(job.partsDone), 1, "parts done");
    }

    function test_postResult_capsPaymentAtWhatRemains() public {
        uint256 jobId = _create(2, 5 * DUCK);
        assertEq(_post(provider1, jobId, 0, 2_000), 4 * DUCK, "first part");
        assertEq(_post(provider2, jobId, 1, 2_000), 1 * DUCK, "capped");
        assertEq(token.balanceOf(address(inference)), 0, "deposit spent");
    }

    function test_postResult_revertsForNonClusterProvider() public {
        uint256 jobId = _create(1, DUCK);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IInferencePool.InferencePoolNotClusterProvider.selector, jobId, stranger)
        );
        inference.postResult(jobId, 0, keccak256("r"), 10);
    }

    function test_postResult_revertsForProviderWhoseRentalEnded() public {
        uint256 jobId = _create(2, DUCK);
        vm.prank(renter);
        market.endRental(1); // provider1's rental
        vm.prank(provider1);
        vm.expectRevert(
            abi.encodeWithSelector(IInferencePool.InferencePoolNotClusterProvider.selector, jobId, provider1)
        );
        inference.postResult(jobId, 0, keccak256("r"), 10);
    }

    function test_postResult_revertsOnDuplicatePart() public {
        uint256 jobId = _create(2, DUCK);
        _post(provider1, jobId, 1, 10);
        vm.prank(provider2);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolPartAlreadyPosted.selector, jobId, 1));
        inference.postResult(jobId, 1, keccak256("r"), 10);
    }

    function test_postResult_revertsOnPartOutOfRange() public {
        uint256 jobId = _create(2, DUCK);
        vm.prank(provider1);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolPartOutOfRange.selector, jobId, 2, 2));
        inference.postResult(jobId, 2, keccak256("r"), 10);
    }

    function test_postResult_revertsWhenFinished() public {
        uint256 jobId = _create(1, DUCK);
        _post(provider1, jobId, 0, 10);
        inference.finishInferenceJob(jobId);
        vm.prank(provider2);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolJobFinished.selector, jobId));
        inference.postResult(jobId, 0, keccak256("r"), 10);
    }

    function test_postResult_revertsForUnknownJob() public {
        vm.prank(provider1);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolUnknownJob.selector, 3));
        inference.postResult(3, 0, keccak256("r"), 10);
    }

    // ------------------------------------------------------------------ finishInferenceJob

    function test_finishInferenceJob_refundsTheRestOnceAllPartsAreIn() public {
        uint256 jobId = _create(2, 100 * DUCK);
        _post(provider1, jobId, 0, 1_000);
        _post(provider3, jobId, 1, 2_500);
        uint256 before = token.balanceOf(renter);
        vm.expectEmit(true, false, false, true, address(inference));
        emit IInferencePool.InferenceJobFinished(jobId, 93 * DUCK);
        vm.prank(stranger); // anyone may close it; the refund goes to the requester
        uint256 refund = inference.finishInferenceJob(jobId);
        assertEq(refund, 93 * DUCK, "100 - 2 - 5");
        assertEq(token.balanceOf(renter), before + 93 * DUCK, "refunded");
        assertTrue(inference.getInferenceJob(jobId).finished, "finished");
        assertEq(token.balanceOf(address(inference)), 0, "nothing stuck");
    }

    function test_finishInferenceJob_refundsOnceTheClusterHasNoActiveRental() public {
        uint256 jobId = _create(3, 10 * DUCK);
        _post(provider1, jobId, 0, 1_000);
        vm.warp(block.timestamp + 2 hours);
        assertEq(inference.finishInferenceJob(jobId), 8 * DUCK, "refund");
    }

    function test_finishInferenceJob_revertsWhilePartsAreMissing() public {
        uint256 jobId = _create(3, 10 * DUCK);
        _post(provider1, jobId, 0, 1_000);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolCannotFinish.selector, jobId, 1, 3));
        inference.finishInferenceJob(jobId);
    }

    function test_finishInferenceJob_revertsWhenAlreadyFinished() public {
        uint256 jobId = _create(1, DUCK);
        _post(provider1, jobId, 0, 10);
        inference.finishInferenceJob(jobId);
        vm.expectRevert(abi.encodeWithSelector(IInferencePool.InferencePoolJobFinished.selector, jobId));
        inference.finishInferenceJob(jobId);
    }

    // ------------------------------------------------------------------ fuzz

    /// Payments are price x millis / 1000 floored, never exceed the deposit, and paid + refund
    /// equals the deposit.
    function testFuzz_postResult_paymentsConserveTheDeposit(uint256 price, uint256 maxPayment, uint64[3] memory millis)
        public
    {
        price = bound(price, 1, 1e30);
        maxPayment = bound(maxPayment, 1, 1e30);
        token.mint(renter, maxPayment);
        vm.prank(renter);
        uint256 jobId = inference.createInferenceJob(MODEL, INPUT, clusterId, 3, price, maxPayment);
        address[3] memory providers = [provider1, provider2, provider3];
        uint256 paid;
        for (uint32 i = 0; i < 3; ++i) {
            uint256 remaining = maxPayment - paid;
            uint256 expected = price * millis[i] / 1000;
            if (expected > remaining) expected = remaining;
            vm.prank(providers[i]);
            uint256 got = inference.postResult(jobId, i, keccak256(abi.encode(i)), millis[i]);
            assertEq(got, expected, "per-part payment");
            paid += got;
        }
        uint256 refund = inference.finishInferenceJob(jobId);
        assertEq(paid + refund, maxPayment, "conservation");
        assertEq(token.balanceOf(address(inference)), 0, "nothing stuck");
    }
}
