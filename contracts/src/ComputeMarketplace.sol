// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {IComputeMarketplace} from "./interfaces/IComputeMarketplace.sol";

/// @title ComputeMarketplace
/// @notice Machine listings and escrowed, per-second rentals paid in $DUCK.
/// @dev Conservation: a rental's `amount` is split exactly into what the provider can withdraw
/// (`accrued`, floored to whole base units) and the renter's refund (`amount - accrued`), so any
/// rounding dust of an early end goes to the renter. A rental that runs its full term accrues
/// pricePerHour x hours exactly.
contract ComputeMarketplace is IComputeMarketplace, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Longest rental, in hours (one year).
    uint256 public constant MAX_RENTAL_HOURS = 24 * 365;
    /// @notice Most machines in one cluster.
    uint256 public constant MAX_CLUSTER_MACHINES = 64;
    /// @notice Longest PeerId accepted, in bytes.
    uint256 public constant MAX_PEER_ID_BYTES = 128;
    /// @notice Longest multiaddr or GPU model string accepted, in bytes.
    uint256 public constant MAX_STRING_BYTES = 256;
    /// @notice Most machines returned by one `getMachines` call.
    uint256 public constant MAX_PAGE = 100;

    /// @notice The $DUCK token rent is paid in.
    IERC20 public immutable token;

    uint256 private _machineCount;
    uint256 private _rentalCount;
    uint256 private _clusterCount;
    mapping(uint256 machineId => Machine) private _machines;
    mapping(uint256 rentalId => Rental) private _rentals;
    mapping(uint256 clusterId => address renter) private _clusterRenters;
    mapping(uint256 clusterId => uint256[] rentalIds) private _clusterRentals;

    /// @param token_ The $DUCK token.
    constructor(IERC20 token_) {
        token = token_;
    }

    // ------------------------------------------------------------------ providers

    /// @inheritdoc IComputeMarketplace
    function listMachine(MachineSpecs calldata specs, uint256 pricePerHour) external returns (uint256 machineId) {
        if (pricePerHour == 0) revert ComputeMarketplaceZeroPrice();
        if (specs.cpuCores == 0) revert ComputeMarketplaceInvalidSpecs("cpuCores");
        if (specs.ramMb == 0) revert ComputeMarketplaceInvalidSpecs("ramMb");
        if (bytes(specs.gpuModel).length > MAX_STRING_BYTES) revert ComputeMarketplaceInvalidSpecs("gpuModel");
        if (specs.peerId.length == 0 || specs.peerId.length > MAX_PEER_ID_BYTES) {
            revert ComputeMarketplaceInvalidSpecs("peerId");
        }
        _checkMultiaddr(specs.multiaddr);

        machineId = ++_machineCount;
        Machine storage machine = _machines[machineId];
        machine.provider = msg.sender;
        machine.pricePerHour = pricePerHour;
        machine.listed = true;
        machine.specs = specs;
        emit MachineListed(machineId, msg.sender, pricePerHour, specs.peerId, specs.multiaddr);
    }

    /// @inheritdoc IComputeMarketplace
    function updateMachine(uint256 machineId, string calldata multiaddr, uint256 pricePerHour) external {
        Machine storage machine = _providerMachine(machineId);
        if (!machine.listed) revert ComputeMarketplaceMachineNotListed(machineId);
        if (pricePerHour == 0) revert ComputeMarketplaceZeroPrice();
        _checkMultiaddr(multiaddr);
        machine.pricePerHour = pricePerHour;
        machine.specs.multiaddr = multiaddr;
        emit MachineUpdated(machineId, multiaddr, pricePerHour);
    }

    /// @inheritdoc IComputeMarketplace
    function unlistMachine(uint256 machineId) external {
        Machine storage machine = _providerMachine(machineId);
        if (!machine.listed) revert ComputeMarketplaceMachineNotListed(machineId);
        uint256 last = machine.lastRentalId;
        if (last != 0 && _isActive(_rentals[last])) revert ComputeMarketplaceMachineRented(machineId, last);
        machine.listed = false;
        emit MachineUnlisted(machineId);
    }

    /// @inheritdoc IComputeMarketplace
    function withdraw(uint256 rentalId) external nonReentrant returns (uint256 amount) {
        amount = _takeAccrued(rentalId);
        if (amount == 0) revert ComputeMarketplaceNothingToWithdraw(rentalId);
        token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IComputeMarketplace
    function withdrawMany(uint256[] calldata rentalIds) external nonReentrant returns (uint256 total) {
        for (uint256 i = 0; i < rentalIds.length; ++i) {
            total += _takeAccrued(rentalIds[i]);
        }
        if (total == 0) revert ComputeMarketplaceNothingToWithdraw(rentalIds.length == 0 ? 0 : rentalIds[0]);
        token.safeTransfer(msg.sender, total);
    }

    // ------------------------------------------------------------------ renters

    /// @inheritdoc IComputeMarketplace
    function rentMachine(uint256 machineId, uint256 hours_) external nonReentrant returns (uint256 rentalId) {
        _checkHours(hours_);
        uint256 amount;
        (rentalId, amount) = _rent(machineId, hours_, 0);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @inheritdoc IComputeMarketplace
    function rentCluster(uint256[] calldata machineIds, uint256 hours_)
        external
        nonReentrant
        returns (uint256 clusterId)
    {
        uint256 size = machineIds.length;
        if (size == 0 || size > MAX_CLUSTER_MACHINES) {
            revert ComputeMarketplaceInvalidClusterSize(size, MAX_CLUSTER_MACHINES);
        }
        _checkHours(hours_);
        clusterId = ++_clusterCount;
        _clusterRenters[clusterId] = msg.sender;
        uint256[] storage members = _clusterRentals[clusterId];
        uint256[] memory rentalIds = new uint256[](size);
        uint256 total;
        for (uint256 i = 0; i < size; ++i) {
            // A machine named twice fails here: its first rental is already active.
            (uint256 rentalId, uint256 amount) = _rent(machineIds[i], hours_, clusterId);
            members.push(rentalId);
            rentalIds[i] = rentalId;
            total += amount;
        }
        emit ClusterFormed(clusterId, msg.sender, machineIds, rentalIds);
        token.safeTransferFrom(msg.sender, address(this), total);
    }

    /// @inheritdoc IComputeMarketplace
    function endRental(uint256 rentalId) external nonReentrant {
        Rental storage rental = _existingRental(rentalId);
        if (rental.renter != msg.sender) revert ComputeMarketplaceNotRenter(rentalId, msg.sender);
        if (!_isActive(rental)) revert ComputeMarketplaceRentalNotActive(rentalId);
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 now_ = uint64(block.timestamp);
        rental.endedAt = now_;
        uint256 refund = rental.amount - _accrued(rental);
        emit RentalEnded(rentalId, msg.sender, now_, refund);
        if (refund > 0) token.safeTransfer(msg.sender, refund);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IComputeMarketplace
    function getMachine(uint256 machineId) external view returns (Machine memory) {
        return _existingMachine(machineId);
    }

    /// @inheritdoc IComputeMarketplace
    function getMachines(uint256 fromId, uint256 limit) external view returns (Machine[] memory page) {
        if (fromId == 0) fromId = 1;
        if (limit > MAX_PAGE) limit = MAX_PAGE;
        uint256 count = _machineCount;
        uint256 n = fromId > count ? 0 : count - fromId + 1;
        if (n > limit) n = limit;
        page = new Machine[](n);
        for (uint256 i = 0; i < n; ++i) {
            page[i] = _machines[fromId + i];
        }
    }

    /// @inheritdoc IComputeMarketplace
    function getRental(uint256 rentalId) external view returns (Rental memory) {
        return _existingRental(rentalId);
    }

    /// @inheritdoc IComputeMarketplace
    function getCluster(uint256 clusterId)
        external
        view
        returns (address renter, uint256[] memory rentalIds, uint256[] memory machineIds)
    {
        renter = _existingClusterRenter(clusterId);
        rentalIds = _clusterRentals[clusterId];
        machineIds = new uint256[](rentalIds.length);
        for (uint256 i = 0; i < rentalIds.length; ++i) {
            machineIds[i] = _rentals[rentalIds[i]].machineId;
        }
    }

    /// @inheritdoc IComputeMarketplace
    function getClusterMembers(uint256 clusterId) external view returns (ClusterMember[] memory members) {
        _existingClusterRenter(clusterId);
        uint256[] storage rentalIds = _clusterRentals[clusterId];
        members = new ClusterMember[](rentalIds.length);
        for (uint256 i = 0; i < rentalIds.length; ++i) {
            Rental storage rental = _rentals[rentalIds[i]];
            Machine storage machine = _machines[rental.machineId];
            members[i] = ClusterMember({
                machineId: rental.machineId,
                rentalId: rentalIds[i],
                provider: rental.provider,
                peerId: machine.specs.peerId,
                multiaddr: machine.specs.multiaddr,
                active: _isActive(rental)
            });
        }
    }

    /// @inheritdoc IComputeMarketplace
    function machineCount() external view returns (uint256) {
        return _machineCount;
    }

    /// @inheritdoc IComputeMarketplace
    function rentalCount() external view returns (uint256) {
        return _rentalCount;
    }

    /// @inheritdoc IComputeMarketplace
    function clusterCount() external view returns (uint256) {
        return _clusterCount;
    }

    /// @inheritdoc IComputeMarketplace
    function isRentalActive(uint256 rentalId) external view returns (bool) {
        return _isActive(_existingRental(rentalId));
    }

    /// @inheritdoc IComputeMarketplace
    function accrued(uint256 rentalId) external view returns (uint256) {
        return _accrued(_existingRental(rentalId));
    }

    /// @inheritdoc IComputeMarketplace
    function withdrawable(uint256 rentalId) external view returns (uint256) {
        Rental storage rental = _existingRental(rentalId);
        return _accrued(rental) - rental.withdrawn;
    }

    /// @inheritdoc IComputeMarketplace
    function isActiveClusterProvider(uint256 clusterId, address account) external view returns (bool) {
        uint256[] storage rentalIds = _clusterRentals[clusterId];
        for (uint256 i = 0; i < rentalIds.length; ++i) {
            Rental storage rental = _rentals[rentalIds[i]];
            if (rental.provider == account && _isActive(rental)) return true;
        }
        return false;
    }

    /// @inheritdoc IComputeMarketplace
    function isClusterActive(uint256 clusterId) external view returns (bool) {
        uint256[] storage rentalIds = _clusterRentals[clusterId];
        for (uint256 i = 0; i < rentalIds.length; ++i) {
            if (_isActive(_rentals[rentalIds[i]])) return true;
        }
        return false;
    }

    /// @inheritdoc IComputeMarketplace
    function clusterRenter(uint256 clusterId) external view returns (address) {
        return _clusterRenters[clusterId];
    }

    // ------------------------------------------------------------------ internal

    /// @dev Books one rental (state only; the caller pulls the payment afterwards).
    function _rent(uint256 machineId, uint256 hours_, uint256 clusterId)
        private
        returns (uint256 rentalId, uint256 amount)
    {
        Machine storage machine = _existingMachine(machineId);
        if (!machine.listed) revert ComputeMarketplaceMachineNotListed(machineId);
        uint256 last = machine.lastRentalId;
        if (last != 0 && _isActive(_rentals[last])) revert ComputeMarketplaceMachineRented(machineId, last);

        amount = machine.pricePerHour * hours_;
        // Casts are safe: timestamps fit 64 bits for billions of years and hours_ <= MAX_RENTAL_HOURS.
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 start = uint64(block.timestamp);
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 end = start + uint64(hours_ * 1 hours);
        rentalId = ++_rentalCount;
        _rentals[rentalId] = Rental({
            machineId: machineId,
            renter: msg.sender,
            provider: machine.provider,
            clusterId: clusterId,
            start: start,
            end: end,
            endedAt: 0,
            pricePerHour: machine.pricePerHour,
            amount: amount,
            withdrawn: 0
        });
        machine.lastRentalId = rentalId;
        emit MachineRented(machineId, rentalId, msg.sender, clusterId, start, end, amount);
    }

    /// @dev Marks the caller's accrued-but-unwithdrawn rent as withdrawn and returns it.
    function _takeAccrued(uint256 rentalId) private returns (uint256 amount) {
        Rental storage rental = _existingRental(rentalId);
        if (rental.provider != msg.sender) revert ComputeMarketplaceNotRentalProvider(rentalId, msg.sender);
        amount = _accrued(rental) - rental.withdrawn;
        if (amount > 0) {
            rental.withdrawn += amount;
            emit RentWithdrawn(rentalId, msg.sender, amount);
        }
    }

    /// @dev pricePerHour x elapsed / 3600, elapsed capped at the rental's (possibly early) end.
    /// At the full term this is exactly `amount`, since elapsed = hours x 3600.
    function _accrued(Rental storage rental) private view returns (uint256) {
        uint64 stop = rental.endedAt != 0 ? rental.endedAt : rental.end;
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 now_ = uint64(block.timestamp);
        if (now_ < stop) stop = now_;
        uint256 elapsed = stop - rental.start;
        return rental.pricePerHour * elapsed / 1 hours;
    }

    function _isActive(Rental storage rental) private view returns (bool) {
        return rental.endedAt == 0 && block.timestamp < rental.end;
    }

    function _checkHours(uint256 hours_) private pure {
        if (hours_ == 0 || hours_ > MAX_RENTAL_HOURS) revert ComputeMarketplaceInvalidHours(hours_, MAX_RENTAL_HOURS);
    }

    function _checkMultiaddr(string calldata multiaddr) private pure {
        uint256 len = bytes(multiaddr).length;
        if (len == 0 || len > MAX_STRING_BYTES) revert ComputeMarketplaceInvalidSpecs("multiaddr");
    }

    function _existingMachine(uint256 machineId) private view returns (Machine storage machine) {
        if (machineId == 0 || machineId > _machineCount) revert ComputeMarketplaceUnknownMachine(machineId);
        machine = _machines[machineId];
    }

    function _providerMachine(uint256 machineId) private view returns (Machine storage machine) {
        machine = _existingMachine(machineId);
        if (machine.provider != msg.sender) revert ComputeMarketplaceNotProvider(machineId, msg.sender);
    }

    function _existingRental(uint256 rentalId) private view returns (Rental storage rental) {
        if (rentalId == 0 || rentalId > _rentalCount) revert ComputeMarketplaceUnknownRental(rentalId);
        rental = _rentals[rentalId];
    }

    function _existingClusterRenter(uint256 clusterId) private view returns (address renter) {
        renter = _clusterRenters[clusterId];
        if (renter == address(0)) revert ComputeMarketplaceUnknownCluster(clusterId);
    }
}
