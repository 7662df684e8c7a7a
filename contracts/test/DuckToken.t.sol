// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

import {Fixture} from "./utils/Fixture.sol";
import {DuckToken} from "../src/DuckToken.sol";
import {IDuckToken} from "../src/interfaces/IDuckToken.sol";

contract DuckTokenTest is Fixture {
    function test_constructor_setsMetadataAndCaps() public view {
        assertEq(token.name(), "Duck Token", "name");
        assertEq(token.symbol(), "DUCK", "symbol");
        assertEq(token.decimals(), 18, "decimals");
        assertEq(token.owner(), address(this), "owner");
        assertEq(token.faucetCapPerAccount(), 10_000 * DUCK, "account cap");
        assertEq(token.faucetCapTotal(), 1_000_000 * DUCK, "total cap");
    }

    function test_mint_byOwnerCreditsAccount() public {
        address fresh = makeAddr("fresh");
        uint256 supply = token.totalSupply();
        token.mint(fresh, 5 * DUCK);
        assertEq(token.balanceOf(fresh), 5 * DUCK, "balance");
        assertEq(token.totalSupply(), supply + 5 * DUCK, "supply");
    }

    function test_mint_revertsForNonOwner() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger));
        token.mint(stranger, 1);
    }

    function test_faucet_mintsToCallerAndEmits() public {
        address fresh = makeAddr("fresh");
        vm.expectEmit(true, false, false, true, address(token));
        emit IDuckToken.FaucetDripped(fresh, 100 * DUCK);
        vm.prank(fresh);
        token.faucet(100 * DUCK);
        assertEq(token.balanceOf(fresh), 100 * DUCK, "balance");
        assertEq(token.faucetDrawn(fresh), 100 * DUCK, "drawn");
        assertEq(token.faucetMinted(), 100 * DUCK, "minted");
        assertEq(token.faucetRemaining(fresh), 9_900 * DUCK, "remaining");
    }

    function test_faucet_revertsOnZeroAmount() public {
        vm.prank(stranger);
        vm.expectRevert(IDuckToken.DuckTokenFaucetZeroAmount.selector);
        token.faucet(0);
    }

    function test_faucet_revertsOverAccountCap() public {
        vm.startPrank(stranger);
        token.faucet(9_000 * DUCK);
        vm.expectRevert(
            abi.encodeWithSelector(
                IDuckToken.DuckTokenFaucetAccountCapExceeded.selector, stranger, 2_000 * DUCK, 1_000 * DUCK
            )
        );
        token.faucet(2_000 * DUCK);
        vm.stopPrank();
    }

    function test_faucet_revertsOverTotalCap() public {
        DuckToken small = new DuckToken(address(this), 10 * DUCK, 15 * DUCK);
        vm.prank(provider1);
        small.faucet(10 * DUCK);
        vm.prank(provider2);
        vm.expectRevert(
            abi.encodeWithSelector(IDuckToken.DuckTokenFaucetTotalCapExceeded.selector, 10 * DUCK, 5 * DUCK)
        );
        small.faucet(10 * DUCK);
    }

    function test_transferFrom_revertsWithoutAllowance() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, stranger, 0, 1));
        token.transferFrom(renter, stranger, 1);
    }

    function testFuzz_faucet_neverExceedsCaps(uint256[8] memory amounts) public {
        DuckToken t = new DuckToken(address(this), 1_000, 3_000);
        address[2] memory who = [provider1, provider2];
        for (uint256 i = 0; i < amounts.length; ++i) {
            uint256 amount = bound(amounts[i], 1, 1_200);
            address account = who[i % 2];
            bool overAccount = amount > t.faucetRemaining(account);
            bool overTotal = amount > t.faucetCapTotal() - t.faucetMinted();
            if (overAccount || overTotal) {
                vm.expectPartialRevert(
                    overAccount
                        ? IDuckToken.DuckTokenFaucetAccountCapExceeded.selector
                        : IDuckToken.DuckTokenFaucetTotalCapExceeded.selector
                );
            }
            vm.prank(account);
            t.faucet(amount);
            assertLe(t.faucetDrawn(account), 1_000, "account cap");
            assertLe(t.faucetMinted(), 3_000, "total cap");
            assertEq(t.totalSupply(), t.faucetMinted(), "supply is faucet output");
        }
    }
}
