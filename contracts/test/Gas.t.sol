// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Fixture} from "./utils/Fixture.sol";

/// @notice Gas of the calls a node makes, each measured in steady state (not the first of its
/// kind, so counters are already non-zero); written to snapshots/GasTest.json by forge.
contract GasTest is Fixture {
    function test_gas_listMachine() public {
        _list(provider1, PRICE);
        vm.prank(provider2);
        market.listMachine(_specs(abi.encodePacked(hex"002408011220", keccak256("ed25519 public key"))), PRICE);
        vm.snapshotGasLastCall("listMachine");
    }

    function test_gas_rentMachine() public {
        uint256 first = _list(provider1, PRICE);
        uint256 second = _list(provider2, PRICE);
        _rent(stranger, first, 1);
        vm.prank(renter);
        market.rentMachine(second, 2);
        vm.snapshotGasLastCall("rentMachine");
    }

    function test_gas_rentCluster3() public {
        _list(provider1, PRICE);
        _rent(stranger, 1, 1);
        uint256[] memory ids = new uint256[](3);
        ids[0] = _list(provider1, PRICE);
        ids[1] = _list(provider2, PRICE);
        ids[2] = _list(provider3, PRICE);
        vm.prank(renter);
        market.rentCluster(ids, 2);
        vm.snapshotGasLastCall("rentCluster(3 machines)");
    }

    function test_gas_withdraw() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 2);
        vm.warp(block.timestamp + 10 minutes);
        vm.prank(provider1);
        market.withdraw(rentalId);
        vm.warp(block.timestamp + 10 minutes);
        vm.prank(provider1);
        market.withdraw(rentalId);
        vm.snapshotGasLastCall("withdraw");
    }

    function test_gas_trainingFlow() public {
        _createJob(_jobSpec());
        uint256 jobId = _createJob(_jobSpec());
        vm.snapshotGasLastCall("createTrainingJob");
        _register(coord2);
        vm.prank(coord1);
        pool.registerCoordinator(abi.encodePacked("peer-", coord1));
        vm.snapshotGasLastCall("registerCoordinator");
        vm.prank(coord1);
        pool.claimTerm(jobId);
        vm.snapshotGasLastCall("claimTerm");

        bytes32 a = keccak256("a");
        bytes32 b = keccak256("b");
        _submit(contributor1, jobId, 1, a, 8_000, 1, _attest(coord1Key, jobId, 1, a, contributor1, 8_000, 1));
        bytes memory sig = _attest(coord1Key, jobId, 1, b, contributor2, 8_100, 1);
        vm.prank(contributor2);
        pool.submitUpdate(jobId, 1, b, 8_100, 1, sig);
        vm.snapshotGasLastCall("submitUpdate");

        vm.startPrank(coord1);
        pool.recordRound(jobId, 1, keccak256("g1"), 8_200);
        vm.snapshotGasLastCall("recordRound");
        pool.renewLease(jobId);
        vm.snapshotGasLastCall("renewLease");
        pool.recordRound(jobId, 2, keccak256("g2"), 8_400);
        pool.recordRound(jobId, 3, keccak256("g3"), 8_600);
        vm.snapshotGasLastCall("recordRound(final)");
        vm.stopPrank();

        vm.warp(block.timestamp + 1 days + 1);
        pool.finishJob(jobId);
        vm.snapshotGasLastCall("finishJob");
    }

    function test_gas_inferenceFlow() public {
        (uint256 clusterId,) = _cluster(2);
        vm.prank(renter);
        uint256 jobId = inference.createInferenceJob(keccak256("m"), keccak256("i"), clusterId, 2, DUCK, 100 * DUCK);
        vm.snapshotGasLastCall("createInferenceJob");
        vm.prank(provider1);
        inference.postResult(jobId, 0, keccak256("r0"), 1_000);
        vm.prank(provider2);
        inference.postResult(jobId, 1, keccak256("r1"), 1_000);
        vm.snapshotGasLastCall("postResult");
        inference.finishInferenceJob(jobId);
        vm.snapshotGasLastCall("finishInferenceJob");
    }
}
