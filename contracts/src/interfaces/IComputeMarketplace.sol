// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IComputeMarketplace
/// @notice Providers list machines with a price per hour in $DUCK; renters pay price x hours into
/// escrow; rent accrues per second and the provider withdraws what has accrued; a renter may end
/// early and is refunded the unused part. Several rentals taken in one transaction form a cluster.
interface IComputeMarketplace {
    /// @notice What a provider declares about a machine.
    /// @param cpuCores Logical CPU cores.
    /// @param ramMb Memory in MiB.
    /// @param gpuModel GPU model name ("" when none).
    /// @param gpuCount Number of GPUs.
    /// @param peerId The provider node's libp2p PeerId, as bytes.
    /// @param multiaddr Where the node can be dialled (a libp2p multiaddr string).
    struct MachineSpecs {
        uint32 cpuCores;
        uint32 ramMb;
        string gpuModel;
        uint32 gpuCount;
        bytes peerId;
        string multiaddr;
    }

    /// @notice A listed (or formerly listed) machine.
    /// @param provider The account that listed it and is paid its rent.
    /// @param pricePerHour Price in $DUCK base units per hour, for new rentals.
    /// @param listed Whether it can be rented.
    /// @param lastRentalId The most recent rental of it (0 = never rented).
    /// @param specs What the provider declared.
    struct Machine {
        address provider;
        uint256 pricePerHour;
        bool listed;
        uint256 lastRentalId;
        MachineSpecs specs;
    }

    /// @notice One rental of one machine.
    /// @param machineId The machine rented.
    /// @param renter Who pays and may end it early.
    /// @param provider Who is paid.
    /// @param clusterId The cluster it belongs to (0 = rented alone).
    /// @param start When it began (unix seconds).
    /// @param end When it runs out as booked.
    /// @param endedAt When the renter ended it early (0 = not ended early).
    /// @param pricePerHour The price locked in at rent time.
    /// @param amount What the renter paid into escrow (pricePerHour x hours).
    /// @param withdrawn What the provider has withdrawn so far.
    struct Rental {
        uint256 machineId;
        address renter;
        address provider;
        uint256 clusterId;
        uint64 start;
        uint64 end;
        uint64 endedAt;
        uint256 pricePerHour;
        uint256 amount;
        uint256 withdrawn;
    }

    /// @notice One machine of a cluster, with what a peer needs to reach it.
    struct ClusterMember {
        uint256 machineId;
        uint256 rentalId;
        address provider;
        bytes peerId;
        string multiaddr;
        bool active;
    }

    /// @notice The machine does not exist.
    error ComputeMarketplaceUnknownMachine(uint256 machineId);
    /// @notice The rental does not exist.
    error ComputeMarketplaceUnknownRental(uint256 rentalId);
    /// @notice The cluster does not exist.
    error ComputeMarketplaceUnknownCluster(uint256 clusterId);
    /// @notice Only the machine's provider may do this.
    error ComputeMarketplaceNotProvider(uint256 machineId, address caller);
    /// @notice Only the rental's renter may do this.
    error ComputeMarketplaceNotRenter(uint256 rentalId, address caller);
    /// @notice Only the rental's provider may withdraw its rent.
    error ComputeMarketplaceNotRentalProvider(uint256 rentalId, address caller);
    /// @notice The machine is not listed.
    error ComputeMarketplaceMachineNotListed(uint256 machineId);
    /// @notice The machine has an active rental covering now.
    error ComputeMarketplaceMachineRented(uint256 machineId, uint256 rentalId);
    /// @notice A price of zero was given.
    error ComputeMarketplaceZeroPrice();
    /// @notice Hours must be between 1 and `maxHours`.
    error ComputeMarketplaceInvalidHours(uint256 hours_, uint256 maxHours);
    /// @notice A specs field is empty or too long.
    error ComputeMarketplaceInvalidSpecs(string field);
    /// @notice A cluster must hold between 1 and `maxMachines` machines.
    error ComputeMarketplaceInvalidClusterSize(uint256 size, uint256 maxMachines);
    /// @notice The rental is not active (already ended or run out).
    error ComputeMarketplaceRentalNotActive(uint256 rentalId);
    /// @notice Nothing has accrued beyond what was already withdrawn.
    error ComputeMarketplaceNothingToWithdraw(uint256 rentalId);

    /// @notice A machine was listed.
    event MachineListed(
        uint256 indexed machineId, address indexed provider, uint256 pricePerHour, bytes peerId, string multiaddr
    );
    /// @notice A listing's address or price changed.
    event MachineUpdated(uint256 indexed machineId, string multiaddr, uint256 pricePerHour);
    /// @notice A machine was unlisted.
    event MachineUnlisted(uint256 indexed machineId);
    /// @notice A machine was rented; `amount` went into escrow.
    event MachineRented(
        uint256 indexed machineId,
        uint256 indexed rentalId,
        address indexed renter,
        uint256 clusterId,
        uint64 start,
        uint64 end,
        uint256 amount
    );
    /// @notice A renter ended a rental early and was refunded `refund`.
    event RentalEnded(uint256 indexed rentalId, address indexed renter, uint64 endedAt, uint256 refund);
    /// @notice Several rentals were taken together as one cluster.
    event ClusterFormed(uint256 indexed clusterId, address indexed renter, uint256[] machineIds, uint256[] rentalIds);
    /// @notice A provider withdrew accrued rent.
    event RentWithdrawn(uint256 indexed rentalId, address indexed provider, uint256 amount);

    /// @notice Lists a machine; returns its id (ids start at 1).
    function listMachine(MachineSpecs calldata specs, uint256 pricePerHour) external returns (uint256 machineId);
    /// @notice Changes a listed machine's multiaddr and price (price applies to new rentals).
    function updateMachine(uint256 machineId, string calldata multiaddr, uint256 pricePerHour) external;
    /// @notice Unlists a machine that has no active rental.
    function unlistMachine(uint256 machineId) external;
    /// @notice Rents a machine for `hours_` hours, paying pricePerHour x hours_ into escrow.
    function rentMachine(uint256 machineId, uint256 hours_) external returns (uint256 rentalId);
    /// @notice Rents several machines for `hours_` hours under one new cluster id.
    function rentCluster(uint256[] calldata machineIds, uint256 hours_) external returns (uint256 clusterId);
    /// @notice Ends an active rental now and refunds the unused part to the renter.
    function endRental(uint256 rentalId) external;
    /// @notice Pays the provider what the rental has accrued beyond earlier withdrawals.
    function withdraw(uint256 rentalId) external returns (uint256 amount);
    /// @notice `withdraw` over several rentals of the caller; rentals with nothing due are skipped.
    function withdrawMany(uint256[] calldata rentalIds) external returns (uint256 total);

    /// @notice A machine by id.
    function getMachine(uint256 machineId) external view returns (Machine memory);
    /// @notice Machines `fromId` .. `fromId + limit - 1` (clipped to the existing ones).
    function getMachines(uint256 fromId, uint256 limit) external view returns (Machine[] memory);
    /// @notice A rental by id.
    function getRental(uint256 rentalId) external view returns (Rental memory);
    /// @notice A cluster's renter, rental ids and machine ids.
    function getCluster(uint256 clusterId)
        external
        view
        returns (address renter, uint256[] memory rentalIds, uint256[] memory machineIds);
    /// @notice A cluster's machines with their PeerIds and addresses.
    function getClusterMembers(uint256 clusterId) external view returns (ClusterMember[] memory);
    /// @notice Number of machines ever listed (ids are 1..machineCount).
    function machineCount() external view returns (uint256);
    /// @notice Number of rentals ever taken.
    function rentalCount() external view returns (uint256);
    /// @notice Number of clusters ever formed.
    function clusterCount() external view returns (uint256);
    /// @notice Whether the rental has not been ended and has not run out.
    function isRentalActive(uint256 rentalId) external view returns (bool);
    /// @notice Rent accrued so far (withdrawn or not).
    function accrued(uint256 rentalId) external view returns (uint256);
    /// @notice Rent the provider could withdraw now.
    function withdrawable(uint256 rentalId) external view returns (uint256);
    /// @notice Whether `account` provides a machine with an active rental in the cluster.
    function isActiveClusterProvider(uint256 clusterId, address account) external view returns (bool);
    /// @notice Whether any rental of the cluster is active.
    function isClusterActive(uint256 clusterId) external view returns (bool);
    /// @notice The cluster's renter (address(0) when the cluster does not exist).
    function clusterRenter(uint256 clusterId) external view returns (address);
}
