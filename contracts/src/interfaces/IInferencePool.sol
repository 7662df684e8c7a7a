// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IInferencePool
/// @notice Inference on a rented cluster: the renter deposits a maximum payment, the cluster's
/// providers post one result hash per part with the compute time it took, and are paid per
/// compute second from the deposit; the remainder is refunded when the job finishes.
interface IInferencePool {
    /// @notice An inference job.
    /// @param requester The cluster's renter, who deposited and gets the refund.
    /// @param modelHash Blob id of the model to run.
    /// @param inputHash Blob id of the input batch.
    /// @param clusterId The rented cluster that runs it.
    /// @param parts Number of parts the input is split into; one result each.
    /// @param pricePerComputeSecond $DUCK base units paid per second of compute.
    /// @param maxPayment The deposit; total payments never exceed it.
    /// @param paid Paid to providers so far.
    /// @param partsDone Parts with a posted result.
    /// @param finished Whether it was finished and refunded.
    /// @param refunded What was refunded at finish.
    struct InferenceJob {
        address requester;
        bytes32 modelHash;
        bytes32 inputHash;
        uint256 clusterId;
        uint32 parts;
        uint256 pricePerComputeSecond;
        uint256 maxPayment;
        uint256 paid;
        uint32 partsDone;
        bool finished;
        uint256 refunded;
    }

    /// @notice One posted result.
    struct PartResult {
        address provider;
        bytes32 resultHash;
        uint64 computeMillis;
        uint256 payment;
        uint64 postedAt;
    }

    /// @notice The job does not exist.
    error InferencePoolUnknownJob(uint256 jobId);
    /// @notice Only the cluster's renter may create jobs on it.
    error InferencePoolNotClusterRenter(uint256 clusterId, address caller);
    /// @notice The cluster has no active rental.
    error InferencePoolClusterInactive(uint256 clusterId);
    /// @notice Parts must be between 1 and `maxParts`.
    error InferencePoolInvalidParts(uint32 parts, uint32 maxParts);
    /// @notice A zero price or zero maximum payment was given.
    error InferencePoolZeroAmount();
    /// @notice The part index is not below the job's part count.
    error InferencePoolPartOutOfRange(uint256 jobId, uint32 part, uint32 parts);
    /// @notice A result for this part was already posted.
    error InferencePoolPartAlreadyPosted(uint256 jobId, uint32 part);
    /// @notice The caller provides no machine with an active rental in the job's cluster.
    error InferencePoolNotClusterProvider(uint256 jobId, address caller);
    /// @notice The job is already finished.
    error InferencePoolJobFinished(uint256 jobId);
    /// @notice Parts are missing and the cluster still has an active rental.
    error InferencePoolCannotFinish(uint256 jobId, uint32 partsDone, uint32 parts);

    /// @notice An inference job was created and `maxPayment` deposited.
    event InferenceJobCreated(
        uint256 indexed jobId,
        address indexed requester,
        uint256 indexed clusterId,
        bytes32 modelHash,
        bytes32 inputHash,
        uint32 parts,
        uint256 pricePerComputeSecond,
        uint256 maxPayment
    );
    /// @notice A provider posted a part's result.
    event ResultPosted(
        uint256 indexed jobId, uint32 indexed part, address indexed provider, bytes32 resultHash, uint64 computeMillis
    );
    /// @notice A provider was paid for compute time.
    event ComputePaid(uint256 indexed jobId, address indexed provider, uint256 amount);
    /// @notice The job was finished and the remainder refunded.
    event InferenceJobFinished(uint256 indexed jobId, uint256 refund);

    /// @notice Creates a job on the caller's active cluster, pulling `maxPayment`.
    function createInferenceJob(
        bytes32 modelHash,
        bytes32 inputHash,
        uint256 clusterId,
        uint32 parts,
        uint256 pricePerComputeSecond,
        uint256 maxPayment
    ) external returns (uint256 jobId);
    /// @notice Posts a part's result and pays the caller price x computeMillis / 1000, capped by
    /// what remains of the deposit.
    function postResult(uint256 jobId, uint32 part, bytes32 resultHash, uint64 computeMillis)
        external
        returns (uint256 payment);
    /// @notice Refunds the rest to the requester once every part is in, or once the cluster has
    /// no active rental left (nobody can post any more). Anyone may call it.
    function finishInferenceJob(uint256 jobId) external returns (uint256 refund);

    /// @notice A job by id.
    function getInferenceJob(uint256 jobId) external view returns (InferenceJob memory);
    /// @notice A part's result (provider 0 = not posted).
    function getResult(uint256 jobId, uint32 part) external view returns (PartResult memory);
    /// @notice Number of jobs ever created (ids are 1..jobCount).
    function jobCount() external view returns (uint256);
}
