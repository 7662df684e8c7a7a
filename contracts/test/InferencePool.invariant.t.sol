// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {InferencePoolHandler} from "./handlers/InferencePoolHandler.sol";
import {DuckToken} from "../src/DuckToken.sol";
import {ComputeMarketplace} from "../src/ComputeMarketplace.sol";
import {InferencePool} from "../src/InferencePool.sol";
import {IComputeMarketplace} from "../src/interfaces/IComputeMarketplace.sol";
import {IInferencePool} from "../src/interfaces/IInferencePool.sol";

/// @notice Conservation: deposits == compute paid + refunds + held, each job within its
/// deposit, and nothing stuck once every cluster has run out and every job is finished.
contract InferencePoolInvariantTest is Test {
    DuckToken internal token;
    ComputeMarketplace internal market;
    InferencePool internal inference;
    InferencePoolHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        token = new DuckToken(address(this), 0, 0);
        market = new ComputeMarketplace(token);
        inference = new InferencePool(token, market);
        address renter = makeAddr("renter");
        token.mint(renter, 1e40);
        vm.startPrank(renter);
        token.approve(address(market), type(uint256).max);
        token.approve(address(inference), type(uint256).max);
        vm.stopPrank();
        for (uint256 i = 0; i < 4; ++i) {
            address provider = makeAddr(string.concat("provider", vm.toString(i)));
            vm.prank(provider);
            market.listMachine(
                IComputeMarketplace.MachineSpecs({
                    cpuCores: 4,
                    ramMb: 8_192,
                    gpuModel: "",
                    gpuCount: 0,
                    peerId: abi.encodePacked(provider),
                    multiaddr: "/ip4/127.0.0.1/tcp/4001"
                }),
                1e18
            );
        }
        handler = new InferencePoolHandler(token, market, inference, renter);

        bytes4[] memory selectors = new bytes4[](6);
        selectors[0] = InferencePoolHandler.rentCluster.selector;
        selectors[1] = InferencePoolHandler.createJob.selector;
        selectors[2] = InferencePoolHandler.postResult.selector;
        selectors[3] = InferencePoolHandler.finishJob.selector;
        selectors[4] = InferencePoolHandler.endRental.selector;
        selectors[5] = InferencePoolHandler.warp.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    function invariant_balanceEqualsDepositsMinusPayouts() public view {
        assertEq(
            token.balanceOf(address(inference)),
            handler.ghost_deposited() - handler.ghost_paid() - handler.ghost_refunded(),
            "balance"
        );
    }

    function invariant_eachJobWithinItsDeposit() public view {
        uint256 held;
        for (uint256 id = 1; id <= inference.jobCount(); ++id) {
            IInferencePool.InferenceJob memory job = inference.getInferenceJob(id);
            assertLe(job.paid, job.maxPayment, "paid within deposit");
            uint256 partsPaid;
            for (uint32 p = 0; p < job.parts; ++p) {
                partsPaid += inference.getResult(id, p).payment;
            }
            assertEq(partsPaid, job.paid, "parts add up");
            if (job.finished) {
                assertEq(job.paid + job.refunded, job.maxPayment, "finished job split exactly");
            } else {
                held += job.maxPayment - job.paid;
            }
        }
        assertEq(token.balanceOf(address(inference)), held, "held");
    }

    /// After every run: let every rental run out, finish every job; nothing may remain.
    function afterInvariant() external {
        vm.warp(block.timestamp + 4 hours);
        for (uint256 id = 1; id <= inference.jobCount(); ++id) {
            if (!inference.getInferenceJob(id).finished) inference.finishInferenceJob(id);
        }
        assertEq(token.balanceOf(address(inference)), 0, "nothing stuck");
    }
}
