// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

import {Fixture} from "./utils/Fixture.sol";
import {IComputeMarketplace} from "../src/interfaces/IComputeMarketplace.sol";

contract ComputeMarketplaceTest is Fixture {
    // ------------------------------------------------------------------ listMachine

    function test_listMachine_storesSpecsAndEmits() public {
        IComputeMarketplace.MachineSpecs memory specs = _specs(hex"0024080112");
        vm.expectEmit(true, true, false, true, address(market));
        emit IComputeMarketplace.MachineListed(1, provider1, PRICE, hex"0024080112", specs.multiaddr);
        vm.prank(provider1);
        uint256 id = market.listMachine(specs, PRICE);

        assertEq(id, 1, "first id");
        assertEq(market.machineCount(), 1, "count");
        IComputeMarketplace.Machine memory m = market.getMachine(id);
        assertEq(m.provider, provider1, "provider");
        assertEq(m.pricePerHour, PRICE, "price");
        assertTrue(m.listed, "listed");
        assertEq(m.lastRentalId, 0, "never rented");
        assertEq(uint256(m.specs.cpuCores), 16, "cores");
        assertEq(uint256(m.specs.ramMb), 65_536, "ram");
        assertEq(m.specs.gpuModel, "H100", "gpu");
        assertEq(uint256(m.specs.gpuCount), 1, "gpus");
        assertEq(m.specs.peerId, hex"0024080112", "peer id");
        assertEq(m.specs.multiaddr, "/ip4/127.0.0.1/tcp/4001", "multiaddr");
    }

    function test_listMachine_revertsOnZeroPrice() public {
        vm.prank(provider1);
        vm.expectRevert(IComputeMarketplace.ComputeMarketplaceZeroPrice.selector);
        market.listMachine(_specs("p"), 0);
    }

    function test_listMachine_revertsOnEmptyPeerId() public {
        vm.prank(provider1);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidSpecs.selector, "peerId"));
        market.listMachine(_specs(""), PRICE);
    }

    function test_listMachine_revertsOnOversizedPeerId() public {
        vm.prank(provider1);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidSpecs.selector, "peerId"));
        market.listMachine(_specs(new bytes(129)), PRICE);
    }

    function test_listMachine_revertsOnEmptyMultiaddr() public {
        IComputeMarketplace.MachineSpecs memory specs = _specs("p");
        specs.multiaddr = "";
        vm.prank(provider1);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidSpecs.selector, "multiaddr")
        );
        market.listMachine(specs, PRICE);
    }

    function test_listMachine_revertsOnZeroCores() public {
        IComputeMarketplace.MachineSpecs memory specs = _specs("p");
        specs.cpuCores = 0;
        vm.prank(provider1);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidSpecs.selector, "cpuCores"));
        market.listMachine(specs, PRICE);
    }

    function test_listMachine_revertsOnZeroRam() public {
        IComputeMarketplace.MachineSpecs memory specs = _specs("p");
        specs.ramMb = 0;
        vm.prank(provider1);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidSpecs.selector, "ramMb"));
        market.listMachine(specs, PRICE);
    }

    function test_listMachine_revertsOnOversizedGpuModel() public {
        IComputeMarketplace.MachineSpecs memory specs = _specs("p");
        specs.gpuModel = string(new bytes(257));
        vm.prank(provider1);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidSpecs.selector, "gpuModel"));
        market.listMachine(specs, PRICE);
    }

    // ------------------------------------------------------------------ updateMachine

    function test_updateMachine_changesAddressAndPrice() public {
        uint256 id = _list(provider1, PRICE);
        vm.expectEmit(true, false, false, true, address(market));
        emit IComputeMarketplace.MachineUpdated(id, "/ip4/127.0.0.1/udp/4001/quic-v1", 2 * PRICE);
        vm.prank(provider1);
        market.updateMachine(id, "/ip4/127.0.0.1/udp/4001/quic-v1", 2 * PRICE);
        IComputeMarketplace.Machine memory m = market.getMachine(id);
        assertEq(m.specs.multiaddr, "/ip4/127.0.0.1/udp/4001/quic-v1", "multiaddr");
        assertEq(m.pricePerHour, 2 * PRICE, "price");
    }

    function test_updateMachine_keepsPriceOfRunningRental() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 2);
        vm.prank(provider1);
        market.updateMachine(id, "/ip4/127.0.0.1/tcp/9", 5 * PRICE);
        assertEq(market.getRental(rentalId).pricePerHour, PRICE, "locked price");
        assertEq(market.getRental(rentalId).amount, 2 * PRICE, "locked amount");
    }

    function test_updateMachine_revertsForNonProvider() public {
        uint256 id = _list(provider1, PRICE);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceNotProvider.selector, id, stranger)
        );
        market.updateMachine(id, "/ip4/127.0.0.1/tcp/1", PRICE);
    }

    function test_updateMachine_revertsWhenUnlisted() public {
        uint256 id = _list(provider1, PRICE);
        vm.startPrank(provider1);
        market.unlistMachine(id);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceMachineNotListed.selector, id));
        market.updateMachine(id, "/ip4/127.0.0.1/tcp/1", PRICE);
        vm.stopPrank();
    }

    function test_updateMachine_revertsOnZeroPrice() public {
        uint256 id = _list(provider1, PRICE);
        vm.prank(provider1);
        vm.expectRevert(IComputeMarketplace.ComputeMarketplaceZeroPrice.selector);
        market.updateMachine(id, "/ip4/127.0.0.1/tcp/1", 0);
    }

    function test_updateMachine_revertsForUnknownMachine() public {
        vm.prank(provider1);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceUnknownMachine.selector, 7));
        market.updateMachine(7, "/ip4/127.0.0.1/tcp/1", PRICE);
    }

    // ------------------------------------------------------------------ unlistMachine

    function test_unlistMachine_unlistsAndEmits() public {
        uint256 id = _list(provider1, PRICE);
        vm.expectEmit(true, false, false, true, address(market));
        emit IComputeMarketplace.MachineUnlisted(id);
        vm.prank(provider1);
        market.unlistMachine(id);
        assertFalse(market.getMachine(id).listed, "unlisted");
    }

    function test_unlistMachine_revertsWhileRented() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 1);
        vm.prank(provider1);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceMachineRented.selector, id, rentalId)
        );
        market.unlistMachine(id);
    }

    function test_unlistMachine_succeedsAfterRentalRanOut() public {
        uint256 id = _list(provider1, PRICE);
        _rent(renter, id, 1);
        vm.warp(block.timestamp + 1 hours);
        vm.prank(provider1);
        market.unlistMachine(id);
        assertFalse(market.getMachine(id).listed, "unlisted");
    }

    function test_unlistMachine_revertsForNonProvider() public {
        uint256 id = _list(provider1, PRICE);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceNotProvider.selector, id, stranger)
        );
        market.unlistMachine(id);
    }

    function test_unlistMachine_revertsWhenAlreadyUnlisted() public {
        uint256 id = _list(provider1, PRICE);
        vm.startPrank(provider1);
        market.unlistMachine(id);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceMachineNotListed.selector, id));
        market.unlistMachine(id);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ rentMachine

    function test_rentMachine_escrowsPriceTimesHours() public {
        uint256 id = _list(provider1, PRICE);
        uint256 before = token.balanceOf(renter);
        uint64 start = uint64(block.timestamp);
        vm.expectEmit(true, true, true, true, address(market));
        emit IComputeMarketplace.MachineRented(id, 1, renter, 0, start, start + 3 hours, 3 * PRICE);
        uint256 rentalId = _rent(renter, id, 3);

        assertEq(rentalId, 1, "first rental");
        assertEq(token.balanceOf(renter), before - 3 * PRICE, "renter paid");
        assertEq(token.balanceOf(address(market)), 3 * PRICE, "escrow");
        IComputeMarketplace.Rental memory r = market.getRental(rentalId);
        assertEq(r.machineId, id, "machine");
        assertEq(r.renter, renter, "renter");
        assertEq(r.provider, provider1, "provider");
        assertEq(r.clusterId, 0, "no cluster");
        assertEq(r.start, start, "start");
        assertEq(r.end, start + 3 hours, "end");
        assertEq(r.amount, 3 * PRICE, "amount");
        assertTrue(market.isRentalActive(rentalId), "active");
        assertEq(market.getMachine(id).lastRentalId, rentalId, "last rental");
        assertEq(market.rentalCount(), 1, "rental count");
    }

    function test_rentMachine_revertsOnZeroHours() public {
        uint256 id = _list(provider1, PRICE);
        vm.prank(renter);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidHours.selector, 0, 24 * 365)
        );
        market.rentMachine(id, 0);
    }

    function test_rentMachine_revertsOnTooManyHours() public {
        uint256 id = _list(provider1, PRICE);
        vm.prank(renter);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidHours.selector, 24 * 365 + 1, 24 * 365)
        );
        market.rentMachine(id, 24 * 365 + 1);
    }

    function test_rentMachine_revertsForUnlistedMachine() public {
        uint256 id = _list(provider1, PRICE);
        vm.prank(provider1);
        market.unlistMachine(id);
        vm.prank(renter);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceMachineNotListed.selector, id));
        market.rentMachine(id, 1);
    }

    function test_rentMachine_revertsForUnknownMachine() public {
        vm.prank(renter);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceUnknownMachine.selector, 0));
        market.rentMachine(0, 1);
    }

    function test_rentMachine_revertsWhenAlreadyRented() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 2);
        vm.warp(block.timestamp + 2 hours - 1);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceMachineRented.selector, id, rentalId)
        );
        market.rentMachine(id, 1);
    }

    function test_rentMachine_succeedsOnceThePreviousRentalRanOut() public {
        uint256 id = _list(provider1, PRICE);
        _rent(renter, id, 2);
        vm.warp(block.timestamp + 2 hours);
        uint256 second = _rent(stranger, id, 1);
        assertEq(second, 2, "second rental");
        assertEq(market.getMachine(id).lastRentalId, 2, "last rental");
    }

    function test_rentMachine_succeedsOnceThePreviousRentalEnded() public {
        uint256 id = _list(provider1, PRICE);
        uint256 first = _rent(renter, id, 2);
        vm.prank(renter);
        market.endRental(first);
        assertEq(_rent(stranger, id, 1), 2, "second rental");
    }

    function test_rentMachine_revertsWithoutAllowance() public {
        uint256 id = _list(provider1, PRICE);
        address poor = makeAddr("poor");
        token.mint(poor, PRICE);
        vm.prank(poor);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, PRICE)
        );
        market.rentMachine(id, 1);
    }

    function test_rentMachine_revertsWithoutBalance() public {
        uint256 id = _list(provider1, PRICE);
        address poor = makeAddr("poor");
        vm.startPrank(poor);
        token.approve(address(market), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, poor, 0, PRICE));
        market.rentMachine(id, 1);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ rentCluster

    function test_rentCluster_rentsEveryMachineUnderOneCluster() public {
        uint256[] memory ids = new uint256[](3);
        ids[0] = _list(provider1, PRICE);
        ids[1] = _list(provider2, 2 * PRICE);
        ids[2] = _list(provider3, 3 * PRICE);
        uint256[] memory rentalIds = new uint256[](3);
        rentalIds[0] = 1;
        rentalIds[1] = 2;
        rentalIds[2] = 3;
        uint256 before = token.balanceOf(renter);

        vm.expectEmit(true, true, true, true, address(market));
        emit IComputeMarketplace.MachineRented(
            ids[0], 1, renter, 1, uint64(block.timestamp), uint64(block.timestamp + 2 hours), 2 * PRICE
        );
        vm.expectEmit(true, true, false, true, address(market));
        emit IComputeMarketplace.ClusterFormed(1, renter, ids, rentalIds);
        vm.prank(renter);
        uint256 clusterId = market.rentCluster(ids, 2);

        assertEq(clusterId, 1, "cluster id");
        assertEq(market.clusterCount(), 1, "cluster count");
        assertEq(token.balanceOf(renter), before - 12 * PRICE, "paid 2h x (1+2+3) x PRICE");
        assertEq(token.balanceOf(address(market)), 12 * PRICE, "escrow");
        (address r, uint256[] memory gotRentals, uint256[] memory gotMachines) = market.getCluster(clusterId);
        assertEq(r, renter, "renter");
        assertEq(gotRentals.length, 3, "rentals");
        for (uint256 i = 0; i < 3; ++i) {
            assertEq(gotRentals[i], rentalIds[i], "rental id");
            assertEq(gotMachines[i], ids[i], "machine id");
            assertEq(market.getRental(rentalIds[i]).clusterId, clusterId, "rental's cluster");
        }
        IComputeMarketplace.ClusterMember[] memory members = market.getClusterMembers(clusterId);
        assertEq(members.length, 3, "members");
        assertEq(members[1].provider, provider2, "member provider");
        assertEq(members[1].peerId, abi.encodePacked("peer-", provider2), "member peer id");
        assertTrue(members[2].active, "member active");
        assertTrue(market.isClusterActive(clusterId), "cluster active");
        assertTrue(market.isActiveClusterProvider(clusterId, provider3), "provider3 member");
        assertFalse(market.isActiveClusterProvider(clusterId, stranger), "stranger not member");
        assertEq(market.clusterRenter(clusterId), renter, "cluster renter");
    }

    function test_rentCluster_revertsOnEmptyList() public {
        vm.prank(renter);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidClusterSize.selector, 0, 64)
        );
        market.rentCluster(new uint256[](0), 1);
    }

    function test_rentCluster_revertsOnTooManyMachines() public {
        vm.prank(renter);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidClusterSize.selector, 65, 64)
        );
        market.rentCluster(new uint256[](65), 1);
    }

    function test_rentCluster_revertsOnZeroHours() public {
        uint256[] memory ids = new uint256[](1);
        ids[0] = _list(provider1, PRICE);
        vm.prank(renter);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceInvalidHours.selector, 0, 24 * 365)
        );
        market.rentCluster(ids, 0);
    }

    function test_rentCluster_revertsOnDuplicateMachine() public {
        uint256[] memory ids = new uint256[](2);
        ids[0] = _list(provider1, PRICE);
        ids[1] = ids[0];
        vm.prank(renter);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceMachineRented.selector, ids[0], 1));
        market.rentCluster(ids, 1);
    }

    function test_rentCluster_revertsAtomicallyIfOneMachineIsRented() public {
        uint256[] memory ids = new uint256[](2);
        ids[0] = _list(provider1, PRICE);
        ids[1] = _list(provider2, PRICE);
        uint256 taken = _rent(stranger, ids[1], 1);
        uint256 before = token.balanceOf(renter);
        vm.prank(renter);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceMachineRented.selector, ids[1], taken)
        );
        market.rentCluster(ids, 1);
        assertEq(token.balanceOf(renter), before, "nothing paid");
        assertTrue(market.getMachine(ids[0]).lastRentalId == 0, "first machine untouched");
    }

    // ------------------------------------------------------------------ withdraw

    function test_withdraw_paysAccruedPerSecond() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 2);
        vm.warp(block.timestamp + 30 minutes);
        uint256 before = token.balanceOf(provider1);
        vm.expectEmit(true, true, false, true, address(market));
        emit IComputeMarketplace.RentWithdrawn(rentalId, provider1, PRICE / 2);
        vm.prank(provider1);
        uint256 paid = market.withdraw(rentalId);
        assertEq(paid, PRICE / 2, "half an hour");
        assertEq(token.balanceOf(provider1), before + PRICE / 2, "provider paid");
        assertEq(market.getRental(rentalId).withdrawn, PRICE / 2, "withdrawn");
        assertEq(market.withdrawable(rentalId), 0, "nothing left now");
    }

    function test_withdraw_paysExactlyTheAmountOverTheFullTerm() public {
        uint256 price = 1_000_003; // not divisible by 3600: per-second floors must still add up
        uint256 id = _list(provider1, price);
        uint256 rentalId = _rent(renter, id, 5);
        uint256 total;
        for (uint256 i = 0; i < 6; ++i) {
            vm.warp(block.timestamp + 2_777);
            vm.prank(provider1);
            total += market.withdraw(rentalId);
        }
        vm.warp(block.timestamp + 10 hours);
        vm.prank(provider1);
        total += market.withdraw(rentalId);
        assertEq(total, 5 * price, "provider got the whole amount");
        assertEq(token.balanceOf(address(market)), 0, "escrow empty");
    }

    function test_withdraw_revertsForNonProvider() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 1);
        vm.warp(block.timestamp + 10 minutes);
        vm.prank(renter);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceNotRentalProvider.selector, rentalId, renter)
        );
        market.withdraw(rentalId);
    }

    function test_withdraw_revertsWhenNothingAccrued() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 1);
        vm.prank(provider1);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceNothingToWithdraw.selector, rentalId)
        );
        market.withdraw(rentalId);
    }

    function test_withdraw_revertsForUnknownRental() public {
        vm.prank(provider1);
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceUnknownRental.selector, 9));
        market.withdraw(9);
    }

    function test_withdrawMany_sumsEveryRental() public {
        (, uint256[] memory ids) = _cluster(1);
        uint256 second = _list(provider1, PRICE);
        uint256 rentalB = _rent(stranger, second, 1);
        vm.warp(block.timestamp + 1 hours);
        uint256[] memory rentals = new uint256[](2);
        rentals[0] = 1; // provider1's machine in the cluster
        rentals[1] = rentalB;
        uint256 before = token.balanceOf(provider1);
        vm.prank(provider1);
        uint256 total = market.withdrawMany(rentals);
        assertEq(total, 2 * PRICE, "two hours of rent");
        assertEq(token.balanceOf(provider1), before + 2 * PRICE, "paid");
        assertEq(ids.length, 3, "cluster of three");
    }

    function test_withdrawMany_revertsWhenNothingIsDue() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 1);
        uint256[] memory rentals = new uint256[](1);
        rentals[0] = rentalId;
        vm.prank(provider1);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceNothingToWithdraw.selector, rentalId)
        );
        market.withdrawMany(rentals);
    }

    function test_withdrawMany_revertsOnAnotherProvidersRental() public {
        _cluster(1);
        vm.warp(block.timestamp + 1 hours);
        uint256[] memory rentals = new uint256[](2);
        rentals[0] = 1;
        rentals[1] = 2; // provider2's
        vm.prank(provider1);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceNotRentalProvider.selector, 2, provider1)
        );
        market.withdrawMany(rentals);
    }

    // ------------------------------------------------------------------ endRental

    function test_endRental_refundsTheUnusedPart() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 4);
        vm.warp(block.timestamp + 1 hours);
        uint256 before = token.balanceOf(renter);
        vm.expectEmit(true, true, false, true, address(market));
        emit IComputeMarketplace.RentalEnded(rentalId, renter, uint64(block.timestamp), 3 * PRICE);
        vm.prank(renter);
        market.endRental(rentalId);
        assertEq(token.balanceOf(renter), before + 3 * PRICE, "refund");
        assertFalse(market.isRentalActive(rentalId), "inactive");
        // Accrual stops at the end: later withdrawals pay one hour in total.
        vm.warp(block.timestamp + 5 hours);
        vm.prank(provider1);
        assertEq(market.withdraw(rentalId), PRICE, "provider share");
        assertEq(token.balanceOf(address(market)), 0, "escrow empty");
    }

    function test_endRental_revertsForNonRenter() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 1);
        vm.prank(provider1);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceNotRenter.selector, rentalId, provider1)
        );
        market.endRental(rentalId);
    }

    function test_endRental_revertsWhenAlreadyEnded() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 1);
        vm.startPrank(renter);
        market.endRental(rentalId);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceRentalNotActive.selector, rentalId)
        );
        market.endRental(rentalId);
        vm.stopPrank();
    }

    function test_endRental_revertsAfterTheTermRanOut() public {
        uint256 id = _list(provider1, PRICE);
        uint256 rentalId = _rent(renter, id, 1);
        vm.warp(block.timestamp + 1 hours);
        vm.prank(renter);
        vm.expectRevert(
            abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceRentalNotActive.selector, rentalId)
        );
        market.endRental(rentalId);
    }

    // ------------------------------------------------------------------ views

    function test_getMachines_pagesThroughListings() public {
        for (uint256 i = 0; i < 5; ++i) {
            _list(provider1, PRICE + i);
        }
        IComputeMarketplace.Machine[] memory page = market.getMachines(2, 2);
        assertEq(page.length, 2, "page size");
        assertEq(page[0].pricePerHour, PRICE + 1, "machine 2");
        assertEq(page[1].pricePerHour, PRICE + 2, "machine 3");
        assertEq(market.getMachines(4, 10).length, 2, "clipped at the end");
        assertEq(market.getMachines(6, 10).length, 0, "past the end");
        assertEq(market.getMachines(0, 1)[0].pricePerHour, PRICE, "0 reads from the first");
    }

    function test_getCluster_revertsForUnknownCluster() public {
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceUnknownCluster.selector, 3));
        market.getCluster(3);
    }

    function test_getMachine_revertsForUnknownMachine() public {
        vm.expectRevert(abi.encodeWithSelector(IComputeMarketplace.ComputeMarketplaceUnknownMachine.selector, 1));
        market.getMachine(1);
    }

    function test_isClusterActive_falseOnceEveryRentalEnded() public {
        (uint256 clusterId,) = _cluster(1);
        vm.startPrank(renter);
        market.endRental(1);
        market.endRental(2);
        assertTrue(market.isClusterActive(clusterId), "one left");
        market.endRental(3);
        vm.stopPrank();
        assertFalse(market.isClusterActive(clusterId), "none left");
        assertFalse(market.isActiveClusterProvider(clusterId, provider1), "ended rental is no member");
    }

    // ------------------------------------------------------------------ fuzz: escrow arithmetic

    /// Provider's total + renter's refund == price x hours, for any price, term and end time.
    function testFuzz_endRental_conservesEscrow(uint256 price, uint256 hours_, uint256 elapsed) public {
        price = bound(price, 1, 1e30);
        hours_ = bound(hours_, 1, 24 * 365);
        elapsed = bound(elapsed, 0, hours_ * 1 hours - 1);
        uint256 id = _list(provider1, price);
        token.mint(renter, price * hours_);
        uint256 renterBefore = token.balanceOf(renter);
        uint256 rentalId = _rent(renter, id, hours_);
        vm.warp(block.timestamp + elapsed);
        vm.prank(renter);
        market.endRental(rentalId);
        uint256 refund = token.balanceOf(renter) - (renterBefore - price * hours_);
        vm.warp(block.timestamp + 400 days);
        uint256 providerTotal = market.withdrawable(rentalId);
        if (providerTotal > 0) {
            vm.prank(provider1);
            market.withdraw(rentalId);
        }
        assertEq(providerTotal + refund, price * hours_, "conservation");
        assertEq(providerTotal, price * elapsed / 3600, "provider share is per-second floor");
        assertEq(token.balanceOf(address(market)), 0, "nothing stuck");
    }

    /// Accrual never decreases, never exceeds the amount, and withdrawals never exceed accrual.
    function testFuzz_withdraw_accruedMonotonicAndCapped(uint256 price, uint256 hours_, uint256[4] memory steps)
        public
    {
        price = bound(price, 1, 1e30);
        hours_ = bound(hours_, 1, 1000);
        uint256 id = _list(provider1, price);
        token.mint(renter, price * hours_);
        uint256 rentalId = _rent(renter, id, hours_);
        uint256 last;
        uint256 withdrawn;
        for (uint256 i = 0; i < steps.length; ++i) {
            vm.warp(block.timestamp + bound(steps[i], 0, hours_ * 1 hours));
            uint256 acc = market.accrued(rentalId);
            assertGe(acc, last, "monotonic");
            assertLe(acc, price * hours_, "capped");
            last = acc;
            uint256 due = market.withdrawable(rentalId);
            if (due > 0) {
                vm.prank(provider1);
                withdrawn += market.withdraw(rentalId);
            }
            assertEq(withdrawn, acc, "withdrawn everything accrued");
        }
        assertEq(token.balanceOf(address(market)), price * hours_ - withdrawn, "escrow holds the rest");
    }

    /// A cluster's escrow is the sum of its machines' price x hours.
    function testFuzz_rentCluster_escrowsSumOfPrices(uint256[3] memory prices, uint256 hours_) public {
        hours_ = bound(hours_, 1, 24 * 365);
        uint256[] memory ids = new uint256[](3);
        uint256 expected;
        address[3] memory providers = [provider1, provider2, provider3];
        for (uint256 i = 0; i < 3; ++i) {
            uint256 price = bound(prices[i], 1, 1e27);
            ids[i] = _list(providers[i], price);
            expected += price * hours_;
        }
        token.mint(renter, expected);
        uint256 before = token.balanceOf(renter);
        vm.prank(renter);
        market.rentCluster(ids, hours_);
        assertEq(before - token.balanceOf(renter), expected, "paid");
        assertEq(token.balanceOf(address(market)), expected, "escrowed");
    }
}
