// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {TrainingPoolHandler} from "./handlers/TrainingPoolHandler.sol";
import {DuckToken} from "../src/DuckToken.sol";
import {ComputeMarketplace} from "../src/ComputeMarketplace.sol";
import {TrainingPool} from "../src/TrainingPool.sol";
import {ITrainingPool} from "../src/interfaces/ITrainingPool.sol";

/// @notice Conservation (deposits == rewards + refunds + returned stakes + held), every job
/// within its pool, term bookkeeping consistent, and nothing stuck once all jobs finish.
contract TrainingPoolInvariantTest is Test {
    uint256 internal constant STAKE = 500e18;

    DuckToken internal token;
    TrainingPool internal pool;
    TrainingPoolHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        token = new DuckToken(address(this), 0, 0);
        pool = new TrainingPool(token, new ComputeMarketplace(token), STAKE);
        address[] memory requesters = new address[](2);
        uint256[] memory keys = new uint256[](3);
        address[] memory contributors = new address[](4);
        for (uint256 i = 0; i < 2; ++i) {
            requesters[i] = makeAddr(string.concat("requester", vm.toString(i)));
            _fund(requesters[i]);
        }
        for (uint256 i = 0; i < 3; ++i) {
            (address c, uint256 key) = makeAccount(string.concat("coordinator", vm.toString(i)));
            keys[i] = key;
            _fund(c);
        }
        for (uint256 i = 0; i < 4; ++i) {
            contributors[i] = makeAddr(string.concat("contributor", vm.toString(i)));
        }
        handler = new TrainingPoolHandler(token, pool, requesters, keys, contributors);

        bytes4[] memory selectors = new bytes4[](9);
        selectors[0] = TrainingPoolHandler.createJob.selector;
        selectors[1] = TrainingPoolHandler.register.selector;
        selectors[2] = TrainingPoolHandler.unregister.selector;
        selectors[3] = TrainingPoolHandler.claimTerm.selector;
        selectors[4] = TrainingPoolHandler.renewLease.selector;
        selectors[5] = TrainingPoolHandler.recordRound.selector;
        selectors[6] = TrainingPoolHandler.submitUpdate.selector;
        selectors[7] = TrainingPoolHandler.finishJob.selector;
        selectors[8] = TrainingPoolHandler.warp.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    function _fund(address who) internal {
        token.mint(who, 1e40);
        vm.prank(who);
        token.approve(address(pool), type(uint256).max);
    }

    function invariant_balanceEqualsDepositsMinusPayouts() public view {
        assertEq(
            token.balanceOf(address(pool)),
            handler.ghost_poolsDeposited() + handler.ghost_stakesDeposited() - handler.ghost_rewardsPaid()
                - handler.ghost_refunded() - handler.ghost_stakesReturned(),
            "balance"
        );
    }

    function invariant_balanceEqualsOpenPoolsPlusStakes() public view {
        uint256 held;
        uint256 paid;
        uint256 refunded;
        for (uint256 id = 1; id <= pool.jobCount(); ++id) {
            ITrainingPool.Job memory job = pool.getJob(id);
            assertLe(job.paid, job.spec.totalRewardPool, "paid within pool");
            paid += job.paid;
            if (job.finished) {
                assertEq(job.paid + job.refunded, job.spec.totalRewardPool, "finished job split exactly");
                refunded += job.refunded;
            } else {
                held += job.spec.totalRewardPool - job.paid;
            }
        }
        for (uint256 i = 0; i < handler.coordinatorCount(); ++i) {
            held += pool.coordinator(handler.coordinators(i)).stake;
        }
        assertEq(token.balanceOf(address(pool)), held, "held");
        assertEq(paid, handler.ghost_rewardsPaid(), "paid bookkeeping");
        assertEq(refunded, handler.ghost_refunded(), "refund bookkeeping");
    }

    /// Each coordinator's live-job count equals the running jobs whose current term it holds.
    function invariant_liveJobsMatchHeldTerms() public view {
        for (uint256 i = 0; i < handler.coordinatorCount(); ++i) {
            address c = handler.coordinators(i);
            uint256 held;
            for (uint256 id = 1; id <= pool.jobCount(); ++id) {
                ITrainingPool.Job memory job = pool.getJob(id);
                if (job.holder == c && !job.finished && job.completedAt == 0) ++held;
            }
            assertEq(pool.coordinator(c).liveJobs, held, "live jobs");
            if (held > 0) assertTrue(pool.coordinator(c).registered, "holders are registered");
        }
    }

    /// After every run: finish every job past its deadline, unregister everyone; nothing remains.
    function afterInvariant() external {
        vm.warp(block.timestamp + 2 days);
        for (uint256 id = 1; id <= pool.jobCount(); ++id) {
            ITrainingPool.Job memory job = pool.getJob(id);
            if (!job.finished) {
                vm.prank(job.requester);
                pool.finishJob(id);
            }
        }
        for (uint256 i = 0; i < handler.coordinatorCount(); ++i) {
            address c = handler.coordinators(i);
            if (pool.coordinator(c).registered) {
                vm.prank(c);
                pool.unregisterCoordinator();
            }
        }
        assertEq(token.balanceOf(address(pool)), 0, "nothing stuck");
    }
}
