// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../utils/Test.sol";
import {DuckToken} from "../../src/DuckToken.sol";
import {ComputeMarketplace} from "../../src/ComputeMarketplace.sol";
import {IComputeMarketplace} from "../../src/interfaces/IComputeMarketplace.sol";

/// @notice Drives the marketplace with bounded, mostly valid calls from a fixed cast of actors
/// and keeps ghost sums of every token that enters or leaves the escrow.
contract MarketplaceHandler is Test {
    DuckToken public immutable token;
    ComputeMarketplace public immutable market;
    address[] public providers;
    address[] public renters;

    uint256 public ghost_deposited;
    uint256 public ghost_withdrawn;
    uint256 public ghost_refunded;
    mapping(uint256 rentalId => uint256) public ghost_refundOf;
    mapping(uint256 rentalId => uint256) public ghost_withdrawnOf;
    uint256 public ghost_calls;

    constructor(DuckToken token_, ComputeMarketplace market_, address[] memory providers_, address[] memory renters_) {
        token = token_;
        market = market_;
        providers = providers_;
        renters = renters_;
    }

    function listMachine(uint256 providerSeed, uint256 price) external {
        address provider = providers[providerSeed % providers.length];
        price = bound(price, 1, 1e24);
        IComputeMarketplace.MachineSpecs memory specs = IComputeMarketplace.MachineSpecs({
            cpuCores: 8,
            ramMb: 16_384,
            gpuModel: "",
            gpuCount: 0,
            peerId: abi.encodePacked(provider, market.machineCount()),
            multiaddr: "/ip4/127.0.0.1/tcp/4001"
        });
        vm.prank(provider);
        market.listMachine(specs, price);
        ++ghost_calls;
    }

    function rentMachine(uint256 renterSeed, uint256 machineSeed, uint256 hours_) external {
        uint256 count = market.machineCount();
        if (count == 0) return;
        uint256 machineId = 1 + machineSeed % count;
        if (!_rentable(machineId)) return;
        hours_ = bound(hours_, 1, 48);
        address renter = renters[renterSeed % renters.length];
        vm.prank(renter);
        uint256 rentalId = market.rentMachine(machineId, hours_);
        ghost_deposited += market.getRental(rentalId).amount;
        ++ghost_calls;
    }

    function rentCluster(uint256 renterSeed, uint256 startSeed, uint256 size, uint256 hours_) external {
        uint256 count = market.machineCount();
        if (count == 0) return;
        size = bound(size, 1, 4);
        uint256[] memory picked = new uint256[](size);
        uint256 n;
        for (uint256 i = 0; i < count && n < size; ++i) {
            uint256 machineId = 1 + (startSeed + i) % count;
            if (_rentable(machineId)) picked[n++] = machineId;
        }
        if (n == 0) return;
        uint256[] memory ids = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            ids[i] = picked[i];
        }
        hours_ = bound(hours_, 1, 48);
        address renter = renters[renterSeed % renters.length];
        uint256 firstRental = market.rentalCount() + 1;
        vm.prank(renter);
        market.rentCluster(ids, hours_);
        for (uint256 r = firstRental; r <= market.rentalCount(); ++r) {
            ghost_deposited += market.getRental(r).amount;
        }
        ++ghost_calls;
    }

    function withdraw(uint256 rentalSeed) external {
        uint256 count = market.rentalCount();
        if (count == 0) return;
        uint256 rentalId = 1 + rentalSeed % count;
        if (market.withdrawable(rentalId) == 0) return;
        IComputeMarketplace.Rental memory rental = market.getRental(rentalId);
        vm.prank(rental.provider);
        uint256 amount = market.withdraw(rentalId);
        ghost_withdrawn += amount;
        ghost_withdrawnOf[rentalId] += amount;
        ++ghost_calls;
    }

    function withdrawMany(uint256 providerSeed) external {
        address provider = providers[providerSeed % providers.length];
        uint256 count = market.rentalCount();
        uint256[] memory mine = new uint256[](count);
        uint256 n;
        uint256 due;
        for (uint256 r = 1; r <= count; ++r) {
            if (market.getRental(r).provider == provider) {
                mine[n++] = r;
                due += market.withdrawable(r);
            }
        }
        if (due == 0) return;
        uint256[] memory ids = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            ids[i] = mine[i];
            ghost_withdrawnOf[mine[i]] += market.withdrawable(mine[i]);
        }
        vm.prank(provider);
        ghost_withdrawn += market.withdrawMany(ids);
        ++ghost_calls;
    }

    function endRental(uint256 rentalSeed) external {
        uint256 count = market.rentalCount();
        if (count == 0) return;
        uint256 rentalId = 1 + rentalSeed % count;
        if (!market.isRentalActive(rentalId)) return;
        IComputeMarketplace.Rental memory rental = market.getRental(rentalId);
        uint256 before = token.balanceOf(rental.renter);
        vm.prank(rental.renter);
        market.endRental(rentalId);
        uint256 refund = token.balanceOf(rental.renter) - before;
        ghost_refunded += refund;
        ghost_refundOf[rentalId] = refund;
        ++ghost_calls;
    }

    function unlistMachine(uint256 machineSeed) external {
        uint256 count = market.machineCount();
        if (count == 0) return;
        uint256 machineId = 1 + machineSeed % count;
        IComputeMarketplace.Machine memory m = market.getMachine(machineId);
        if (!m.listed || (m.lastRentalId != 0 && market.isRentalActive(m.lastRentalId))) return;
        vm.prank(m.provider);
        market.unlistMachine(machineId);
        ++ghost_calls;
    }

    function warp(uint256 secondsAhead) external {
        vm.warp(block.timestamp + bound(secondsAhead, 1, 6 hours));
    }

    function _rentable(uint256 machineId) private view returns (bool) {
        IComputeMarketplace.Machine memory m = market.getMachine(machineId);
        return m.listed && (m.lastRentalId == 0 || !market.isRentalActive(m.lastRentalId));
    }
}
