// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

import {IDuckToken} from "./interfaces/IDuckToken.sol";

/// @title DuckToken
/// @notice "Duck Token" ($DUCK), 18 decimals, for devnets and testnets. The owner mints; anyone
/// may draw from a faucet capped per account and in total, so a demo can fund fresh accounts
/// without the owner's key.
contract DuckToken is ERC20, Ownable, IDuckToken {
    /// @notice Most one account may ever draw from the faucet.
    uint256 public immutable faucetCapPerAccount;
    /// @notice Most the faucet may ever hand out in total.
    uint256 public immutable faucetCapTotal;
    /// @notice What the faucet has handed out so far.
    uint256 public faucetMinted;
    /// @notice What each account has drawn from the faucet.
    mapping(address account => uint256 amount) public faucetDrawn;

    /// @param initialOwner The account allowed to mint.
    /// @param capPerAccount Faucet cap per account (e.g. 10,000 DUCK).
    /// @param capTotal Faucet cap over all accounts.
    constructor(address initialOwner, uint256 capPerAccount, uint256 capTotal)
        ERC20("Duck Token", "DUCK")
        Ownable(initialOwner)
    {
        faucetCapPerAccount = capPerAccount;
        faucetCapTotal = capTotal;
    }

    /// @inheritdoc IDuckToken
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }

    /// @inheritdoc IDuckToken
    function faucet(uint256 amount) external {
        if (amount == 0) revert DuckTokenFaucetZeroAmount();
        uint256 accountLeft = faucetRemaining(msg.sender);
        if (amount > accountLeft) revert DuckTokenFaucetAccountCapExceeded(msg.sender, amount, accountLeft);
        uint256 totalLeft = faucetCapTotal - faucetMinted;
        if (amount > totalLeft) revert DuckTokenFaucetTotalCapExceeded(amount, totalLeft);
        faucetDrawn[msg.sender] += amount;
        faucetMinted += amount;
        _mint(msg.sender, amount);
        emit FaucetDripped(msg.sender, amount);
    }

    /// @inheritdoc IDuckToken
    function faucetRemaining(address account) public view returns (uint256) {
        return faucetCapPerAccount - faucetDrawn[account];
    }
}
