// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./Test.sol";
import {DuckToken} from "../../src/DuckToken.sol";
import {ComputeMarketplace} from "../../src/ComputeMarketplace.sol";
import {TrainingPool} from "../../src/TrainingPool.sol";
import {InferencePool} from "../../src/InferencePool.sol";
import {IComputeMarketplace} from "../../src/interfaces/IComputeMarketplace.sol";
import {ITrainingPool} from "../../src/interfaces/ITrainingPool.sol";

/// @notice Deploys the four contracts and funds named actors; shared by the unit suites.
abstract contract Fixture is Test {
    uint256 internal constant DUCK = 1e18;
    uint256 internal constant FUNDS = 1_000_000 * DUCK;
    uint256 internal constant MIN_STAKE = 1_000 * DUCK;
    uint256 internal constant PRICE = 36 * DUCK; // 0.01 DUCK per second

    DuckToken internal token;
    ComputeMarketplace internal market;
    TrainingPool internal pool;
    InferencePool internal inference;

    address internal provider1;
    address internal provider2;
    address internal provider3;
    address internal renter;
    address internal requester;
    address internal coord1;
    uint256 internal coord1Key;
    address internal coord2;
    uint256 internal coord2Key;
    address internal contributor1;
    address internal contributor2;
    address internal stranger;
    uint256 internal strangerKey;

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        token = new DuckToken(address(this), 10_000 * DUCK, 1_000_000 * DUCK);
        market = new ComputeMarketplace(token);
        pool = new TrainingPool(token, market, MIN_STAKE);
        inference = new InferencePool(token, market);

        provider1 = makeAddr("provider1");
        provider2 = makeAddr("provider2");
        provider3 = makeAddr("provider3");
        renter = makeAddr("renter");
        requester = makeAddr("requester");
        (coord1, coord1Key) = makeAccount("coord1");
        (coord2, coord2Key) = makeAccount("coord2");
        contributor1 = makeAddr("contributor1");
        contributor2 = makeAddr("contributor2");
        (stranger, strangerKey) = makeAccount("stranger");

        address[11] memory actors = [
            provider1,
            provider2,
            provider3,
            renter,
            requester,
            coord1,
            coord2,
            contributor1,
            contributor2,
            stranger,
            address(this)
        ];
        for (uint256 i = 0; i < actors.length; ++i) {
            _fund(actors[i], FUNDS);
        }
    }

    /// @dev Mints `amount` to `who` and approves every contract to pull it.
    function _fund(address who, uint256 amount) internal {
        token.mint(who, amount);
        vm.startPrank(who);
        token.approve(address(market), type(uint256).max);
        token.approve(address(pool), type(uint256).max);
        token.approve(address(inference), type(uint256).max);
        vm.stopPrank();
    }

    function _specs(bytes memory peerId) internal pure returns (IComputeMarketplace.MachineSpecs memory) {
        return IComputeMarketplace.MachineSpecs({
            cpuCores: 16,
            ramMb: 65_536,
            gpuModel: "H100",
            gpuCount: 1,
            peerId: peerId,
            multiaddr: "/ip4/127.0.0.1/tcp/4001"
        });
    }

    function _list(address provider, uint256 price) internal returns (uint256 machineId) {
        vm.prank(provider);
        machineId = market.listMachine(_specs(abi.encodePacked("peer-", provider)), price);
    }

    function _rent(address who, uint256 machineId, uint256 hours_) internal returns (uint256 rentalId) {
        vm.prank(who);
        rentalId = market.rentMachine(machineId, hours_);
    }

    /// @dev Lists one machine per provider and rents all three as a cluster for `hours_`.
    function _cluster(uint256 hours_) internal returns (uint256 clusterId, uint256[] memory machineIds) {
        machineIds = new uint256[](3);
        machineIds[0] = _list(provider1, PRICE);
        machineIds[1] = _list(provider2, PRICE);
        machineIds[2] = _list(provider3, PRICE);
        vm.prank(renter);
        clusterId = market.rentCluster(machineIds, hours_);
    }

    function _jobSpec() internal view returns (ITrainingPool.JobSpec memory spec) {
        spec = ITrainingPool.JobSpec({
            modelHash: keccak256("model"),
            validationHash: keccak256("validation"),
            specHash: keccak256("spec"),
            specUri: "",
            totalRewardPool: 1_000 * DUCK,
            rewardPerUpdate: 10 * DUCK,
            rewardPerRound: 0,
            rounds: 3,
            maxUpdatesPerRound: 4,
            minAccuracyBps: 7_000,
            rewardMode: ITrainingPool.RewardMode.PerUpdate,
            leaseSeconds: 10,
            claimWindow: 1 days,
            deadline: uint64(block.timestamp + 7 days),
            clusterId: 0
        });
    }

    function _createJob(ITrainingPool.JobSpec memory spec) internal returns (uint256 jobId) {
        vm.prank(requester);
        jobId = pool.createTrainingJob(spec);
    }

    function _register(address who) internal {
        vm.prank(who);
        pool.registerCoordinator(abi.encodePacked("peer-", who));
    }

    function _claim(address who, uint256 jobId) internal returns (uint64 term) {
        vm.prank(who);
        term = pool.claimTerm(jobId);
    }

    /// @dev A coordinator's EIP-712 attestation signature.
    function _attest(
        uint256 key,
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        address contributor,
        uint16 accuracyBps,
        uint64 term
    ) internal view returns (bytes memory) {
        bytes32 digest = pool.attestationDigest(jobId, round, updateHash, contributor, accuracyBps, term);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _submit(
        address contributor,
        uint256 jobId,
        uint64 round,
        bytes32 updateHash,
        uint16 accuracyBps,
        uint64 term,
        bytes memory sig
    ) internal returns (uint256 reward) {
        vm.prank(contributor);
        reward = pool.submitUpdate(jobId, round, updateHash, accuracyBps, term, sig);
    }
}
