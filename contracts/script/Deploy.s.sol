// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {Vm} from "../test/utils/Vm.sol";
import {DuckToken} from "../src/DuckToken.sol";
import {ComputeMarketplace} from "../src/ComputeMarketplace.sol";
import {TrainingPool} from "../src/TrainingPool.sol";
import {InferencePool} from "../src/InferencePool.sol";

/// @notice Deploys QuackMesh's contracts with forge (an alternative to `quackmesh chain deploy`,
/// which also writes testnet/deployments/<network>.json):
///
///   QUACKMESH_PRIVATE_KEY=0x... [QUACKMESH_DUCK_TOKEN=0x...] [QUACKMESH_MIN_STAKE_WEI=...] \
///     forge script script/Deploy.s.sol --rpc-url https://testnet-rpc.duckchain.io --broadcast
///
/// DuckToken is deployed only when QUACKMESH_DUCK_TOKEN is unset (mainnet uses the real $DUCK).
contract Deploy {
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);
    /// @dev forge prints calls to this address as console logs (it has no code: call it raw).
    address internal constant CONSOLE = 0x000000000000000000636F6e736F6c652e6c6f67;

    function run() external {
        uint256 key = vm.envUint("QUACKMESH_PRIVATE_KEY");
        address token = vm.envOr("QUACKMESH_DUCK_TOKEN", address(0));
        uint256 minStake = vm.envOr("QUACKMESH_MIN_STAKE_WEI", uint256(1_000e18));
        vm.startBroadcast(key);
        if (token == address(0)) {
            token = address(new DuckToken(vm.addr(key), 10_000e18, 100_000_000e18));
        }
        ComputeMarketplace market = new ComputeMarketplace(IERC20(token));
        TrainingPool pool = new TrainingPool(IERC20(token), market, minStake);
        InferencePool inference = new InferencePool(IERC20(token), market);
        vm.stopBroadcast();
        _log("DuckToken", token);
        _log("ComputeMarketplace", address(market));
        _log("TrainingPool", address(pool));
        _log("InferencePool", address(inference));
    }

    function _log(string memory label, address value) internal view {
        (bool ok,) = CONSOLE.staticcall(abi.encodeWithSignature("log(string,address)", label, value));
        ok; // a log that fails to print must not fail the deployment
    }
}
