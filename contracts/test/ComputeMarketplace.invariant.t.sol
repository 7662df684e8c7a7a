// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {MarketplaceHandler} from "./handlers/MarketplaceHandler.sol";
import {DuckToken} from "../src/DuckToken.sol";
import {ComputeMarketplace} from "../src/ComputeMarketplace.sol";
import {IComputeMarketplace} from "../src/interfaces/IComputeMarketplace.sol";

/// @notice Escrow conservation: deposited == withdrawn + refunded + held, per rental and in
/// total, and once every rental has run out everything held can be withdrawn.
contract ComputeMarketplaceInvariantTest is Test {
    DuckToken internal token;
    ComputeMarketplace internal market;
    MarketplaceHandler internal handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        token = new DuckToken(address(this), 0, 0);
        market = new ComputeMarketplace(token);
        address[] memory providers = new address[](3);
        address[] memory renters = new address[](3);
        for (uint256 i = 0; i < 3; ++i) {
            providers[i] = makeAddr(string.concat("provider", vm.toString(i)));
            renters[i] = makeAddr(string.concat("renter", vm.toString(i)));
            token.mint(renters[i], 1e40);
            vm.prank(renters[i]);
            token.approve(address(market), type(uint256).max);
        }
        handler = new MarketplaceHandler(token, market, providers, renters);

        bytes4[] memory selectors = new bytes4[](8);
        selectors[0] = MarketplaceHandler.listMachine.selector;
        selectors[1] = MarketplaceHandler.rentMachine.selector;
        selectors[2] = MarketplaceHandler.rentCluster.selector;
        selectors[3] = MarketplaceHandler.withdraw.selector;
        selectors[4] = MarketplaceHandler.withdrawMany.selector;
        selectors[5] = MarketplaceHandler.endRental.selector;
        selectors[6] = MarketplaceHandler.unlistMachine.selector;
        selectors[7] = MarketplaceHandler.warp.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    function invariant_escrowEqualsDepositedMinusPaidOut() public view {
        assertEq(
            token.balanceOf(address(market)),
            handler.ghost_deposited() - handler.ghost_withdrawn() - handler.ghost_refunded(),
            "balance"
        );
    }

    function invariant_eachRentalSplitsItsAmountExactly() public view {
        uint256 held;
        for (uint256 r = 1; r <= market.rentalCount(); ++r) {
            IComputeMarketplace.Rental memory rental = market.getRental(r);
            uint256 refund = handler.ghost_refundOf(r);
            uint256 acc = market.accrued(r);
            assertEq(rental.withdrawn, handler.ghost_withdrawnOf(r), "withdrawn bookkeeping");
            assertLe(rental.withdrawn, acc, "withdrawn <= accrued");
            assertLe(acc + refund, rental.amount, "accrued + refund <= amount");
            held += rental.amount - refund - rental.withdrawn;
        }
        assertEq(token.balanceOf(address(market)), held, "held = sum over rentals");
    }

    /// After every run: let all rentals run out, withdraw everything; nothing may remain.
    function afterInvariant() external {
        vm.warp(block.timestamp + 49 hours);
        for (uint256 r = 1; r <= market.rentalCount(); ++r) {
            IComputeMarketplace.Rental memory rental = market.getRental(r);
            uint256 due = market.withdrawable(r);
            assertEq(due + rental.withdrawn + handler.ghost_refundOf(r), rental.amount, "exact split");
            if (due > 0) {
                vm.prank(rental.provider);
                market.withdraw(r);
            }
        }
        assertEq(token.balanceOf(address(market)), 0, "nothing stuck");
    }
}
