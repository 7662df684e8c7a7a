// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @title IDuckToken
/// @notice The $DUCK ERC-20 used on devnets and DuckChain testnet: owner minting plus a capped
/// faucet so that tests and demos can fund themselves. Mainnet uses the real $DUCK instead.
interface IDuckToken is IERC20 {
    /// @notice A faucet request asked for zero tokens.
    error DuckTokenFaucetZeroAmount();

    /// @notice A faucet request would take `account` past the per-account cap.
    /// @param account The requesting account.
    /// @param requested The amount asked for.
    /// @param remaining What the account may still draw.
    error DuckTokenFaucetAccountCapExceeded(address account, uint256 requested, uint256 remaining);

    /// @notice A faucet request would take the faucet past its global cap.
    /// @param requested The amount asked for.
    /// @param remaining What the faucet may still hand out in total.
    error DuckTokenFaucetTotalCapExceeded(uint256 requested, uint256 remaining);

    /// @notice The faucet minted `amount` to `account`.
    /// @param account The account that drew from the faucet.
    /// @param amount The amount minted.
    event FaucetDripped(address indexed account, uint256 amount);

    /// @notice Mints `amount` to `to`; owner only.
    function mint(address to, uint256 amount) external;

    /// @notice Mints `amount` to the caller, within the per-account and global faucet caps.
    function faucet(uint256 amount) external;

    /// @notice How much `account` may still draw from the faucet.
    function faucetRemaining(address account) external view returns (uint256);
}
