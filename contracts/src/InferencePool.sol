// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {IComputeMarketplace} from "./interfaces/IComputeMarketplace.sol";
import {IInferencePool} from "./interfaces/IInferencePool.sol";

/// @title InferencePool
/// @notice Pays a rented cluster's providers per compute second for inference results.
/// @dev Membership is read from the marketplace at post time: only providers of the cluster's
/// active rentals may post. Conservation: the contract holds `maxPayment - paid` of every
/// unfinished job; per-part payments round down, so rounding dust stays with the requester.
contract InferencePool is IInferencePool, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Most parts per job.
    uint32 public constant MAX_PARTS = 4096;

    /// @notice The $DUCK token.
    IERC20 public immutable token;
    /// @notice The marketplace that knows clusters and their rentals.
    IComputeMarketplace public immutable marketplace;

    uint256 private _jobCount;
    mapping(uint256 jobId => InferenceJob) private _jobs;
    mapping(uint256 jobId => mapping(uint32 part => PartResult)) private _results;

    /// @param token_ The $DUCK token.
    /// @param marketplace_ The compute marketplace.
    constructor(IERC20 token_, IComputeMarketplace marketplace_) {
        token = token_;
        marketplace = marketplace_;
    }

    /// @inheritdoc IInferencePool
    function createInferenceJob(
        bytes32 modelHash,
        bytes32 inputHash,
        uint256 clusterId,
        uint32 parts,
        uint256 pricePerComputeSecond,
        uint256 maxPayment
    ) external nonReentrant returns (uint256 jobId) {
        if (parts == 0 || parts > MAX_PARTS) revert InferencePoolInvalidParts(parts, MAX_PARTS);
        if (pricePerComputeSecond == 0 || maxPayment == 0) revert InferencePoolZeroAmount();
        if (marketplace.clusterRenter(clusterId) != msg.sender) {
            revert InferencePoolNotClusterRenter(clusterId, msg.sender);
        }
        if (!marketplace.isClusterActive(clusterId)) revert InferencePoolClusterInactive(clusterId);

        jobId = ++_jobCount;
        InferenceJob storage job = _jobs[jobId];
        job.requester = msg.sender;
        job.modelHash = modelHash;
        job.inputHash = inputHash;
        job.clusterId = clusterId;
        job.parts = parts;
        job.pricePerComputeSecond = pricePerComputeSecond;
        job.maxPayment = maxPayment;
        emit InferenceJobCreated(
            jobId, msg.sender, clusterId, modelHash, inputHash, parts, pricePerComputeSecond, maxPayment
        );
        token.safeTransferFrom(msg.sender, address(this), maxPayment);
    }

    /// @inheritdoc IInferencePool
    function postResult(uint256 jobId, uint32 part, bytes32 resultHash, uint64 computeMillis)
        external
        nonReentrant
        returns (uint256 payment)
    {
        InferenceJob storage job = _existingJob(jobId);
        if (job.finished) revert InferencePoolJobFinished(jobId);
        if (part >= job.parts) revert InferencePoolPartOutOfRange(jobId, part, job.parts);
        PartResult storage result = _results[jobId][part];
        if (result.provider != address(0)) revert InferencePoolPartAlreadyPosted(jobId, part);
        if (!marketplace.isActiveClusterProvider(job.clusterId, msg.sender)) {
            revert InferencePoolNotClusterProvider(jobId, msg.sender);
        }

        uint256 remaining = job.maxPayment - job.paid;
        // mulDiv keeps price x millis from overflowing before the division; the cap keeps the
        // total within the deposit.
        payment = Math.min(Math.mulDiv(job.pricePerComputeSecond, computeMillis, 1000), remaining);
        result.provider = msg.sender;
        result.resultHash = resultHash;
        result.computeMillis = computeMillis;
        result.payment = payment;
        // forge-lint: disable-next-line(unsafe-typecast)
        result.postedAt = uint64(block.timestamp);
        job.paid += payment;
        job.partsDone += 1;
        emit ResultPosted(jobId, part, msg.sender, resultHash, computeMillis);
        if (payment > 0) {
            emit ComputePaid(jobId, msg.sender, payment);
            token.safeTransfer(msg.sender, payment);
        }
    }

    /// @inheritdoc IInferencePool
    function finishInferenceJob(uint256 jobId) external nonReentrant returns (uint256 refund) {
        InferenceJob storage job = _existingJob(jobId);
        if (job.finished) revert InferencePoolJobFinished(jobId);
        if (job.partsDone < job.parts && marketplace.isClusterActive(job.clusterId)) {
            revert InferencePoolCannotFinish(jobId, job.partsDone, job.parts);
        }
        refund = job.maxPayment - job.paid;
        job.finished = true;
        job.refunded = refund;
        emit InferenceJobFinished(jobId, refund);
        if (refund > 0) token.safeTransfer(job.requester, refund);
    }

    /// @inheritdoc IInferencePool
    function getInferenceJob(uint256 jobId) external view returns (InferenceJob memory) {
        return _existingJob(jobId);
    }

    /// @inheritdoc IInferencePool
    function getResult(uint256 jobId, uint32 part) external view returns (PartResult memory) {
        return _results[jobId][part];
    }

    /// @inheritdoc IInferencePool
    function jobCount() external view returns (uint256) {
        return _jobCount;
    }

    function _existingJob(uint256 jobId) private view returns (InferenceJob storage job) {
        if (jobId == 0 || jobId > _jobCount) revert InferencePoolUnknownJob(jobId);
        job = _jobs[jobId];
    }
}
