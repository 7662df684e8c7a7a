// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../utils/Test.sol";
import {DuckToken} from "../../src/DuckToken.sol";
import {ComputeMarketplace} from "../../src/ComputeMarketplace.sol";
import {InferencePool} from "../../src/InferencePool.sol";
import {IComputeMarketplace} from "../../src/interfaces/IComputeMarketplace.sol";
import {IInferencePool} from "../../src/interfaces/IInferencePool.sol";

/// @notice Drives inference jobs over rented clusters (renting, posting parts, ending rentals,
/// finishing) and keeps ghost sums of deposits, compute payments and refunds.
contract InferencePoolHandler is Test {
    DuckToken public immutable token;
    ComputeMarketplace public immutable market;
    InferencePool public immutable inference;
    address public immutable renter;

    uint256 public ghost_deposited;
    uint256 public ghost_paid;
    uint256 public ghost_refunded;
    uint256 public ghost_posts;

    constructor(DuckToken token_, ComputeMarketplace market_, InferencePool inference_, address renter_) {
        token = token_;
        market = market_;
        inference = inference_;
        renter = renter_;
    }

    function rentCluster(uint256 size, uint256 hours_) external {
        size = bound(size, 1, 3);
        uint256[] memory picked = new uint256[](size);
        uint256 n;
        for (uint256 id = 1; id <= market.machineCount() && n < size; ++id) {
            uint256 last = market.getMachine(id).lastRentalId;
            if (last == 0 || !market.isRentalActive(last)) picked[n++] = id;
        }
        if (n == 0) return;
        uint256[] memory ids = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            ids[i] = picked[i];
        }
        vm.prank(renter);
        market.rentCluster(ids, bound(hours_, 1, 3));
    }

    function createJob(uint256 clusterSeed, uint32 parts, uint256 price, uint256 maxPayment) external {
        uint256 clusters = market.clusterCount();
        if (clusters == 0) return;
        uint256 clusterId = 1 + clusterSeed % clusters;
        if (!market.isClusterActive(clusterId)) return;
        parts = uint32(bound(parts, 1, 5));
        price = bound(price, 1, 1e21);
        maxPayment = bound(maxPayment, 1, 1e24);
        vm.prank(renter);
        inference.createInferenceJob(keccak256("m"), keccak256("i"), clusterId, parts, price, maxPayment);
        ghost_deposited += maxPayment;
    }

    function postResult(uint256 jobSeed, uint32 partSeed, uint64 millis, uint256 memberSeed) external {
        uint256 jobs = inference.jobCount();
        if (jobs == 0) return;
        uint256 jobId = 1 + jobSeed % jobs;
        IInferencePool.InferenceJob memory job = inference.getInferenceJob(jobId);
        if (job.finished) return;
        uint32 part = partSeed % job.parts;
        if (inference.getResult(jobId, part).provider != address(0)) return;
        IComputeMarketplace.ClusterMember[] memory members = market.getClusterMembers(job.clusterId);
        IComputeMarketplace.ClusterMember memory member = members[memberSeed % members.length];
        if (!member.active) return;
        uint256 before = token.balanceOf(member.provider);
        vm.prank(member.provider);
        inference.postResult(jobId, part, keccak256(abi.encode(jobId, part)), uint64(bound(millis, 0, 600_000)));
        ghost_paid += token.balanceOf(member.provider) - before;
        ++ghost_posts;
    }

    function finishJob(uint256 jobSeed) external {
        uint256 jobs = inference.jobCount();
        if (jobs == 0) return;
        uint256 jobId = 1 + jobSeed % jobs;
        IInferencePool.InferenceJob memory job = inference.getInferenceJob(jobId);
        if (job.finished) return;
        if (job.partsDone < job.parts && market.isClusterActive(job.clusterId)) return;
        ghost_refunded += inference.finishInferenceJob(jobId);
    }

    function endRental(uint256 rentalSeed) external {
        uint256 rentals = market.rentalCount();
        if (rentals == 0) return;
        uint256 rentalId = 1 + rentalSeed % rentals;
        if (!market.isRentalActive(rentalId)) return;
        vm.prank(renter);
        market.endRental(rentalId);
    }

    function warp(uint256 secondsAhead) external {
        vm.warp(block.timestamp + bound(secondsAhead, 1, 1 hours));
    }
}
