#!/usr/bin/env node
// Exports the artifacts the node compiles against (ABI + creation bytecode) from a fresh
// `forge build` into contracts/abi/<Contract>.json, so that `cargo build` never needs forge.
//
//   scripts/export-abi.js           rebuild and rewrite contracts/abi/*.json
//   scripts/export-abi.js --check   rebuild into a temp dir and fail if the committed files differ
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const CONTRACTS = ['DuckToken', 'ComputeMarketplace', 'TrainingPool', 'InferencePool'];
const root = path.resolve(__dirname, '..');
const contractsDir = path.join(root, 'contracts');
const abiDir = path.join(contractsDir, 'abi');
const forge = process.env.QUACKMESH_FORGE || path.join(root, 'node_modules/.bin/forge');
const check = process.argv.includes('--check');

if (!fs.existsSync(forge)) {
  console.error(`export-abi: forge not found at ${forge}; run \`npm ci\` at the repo root`);
  process.exit(2);
}

// A private out/cache dir keeps this independent of (and harmless to) a concurrent `forge test`.
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'quackmesh-abi-'));
try {
  execFileSync(
    forge,
    ['build', '--skip', 'test', '--skip', 'script', '--out', path.join(tmp, 'out'), '--cache-path', path.join(tmp, 'cache')],
    { cwd: contractsDir, stdio: ['ignore', 'ignore', 'inherit'] },
  );
  let drift = [];
  fs.mkdirSync(abiDir, { recursive: true });
  for (const name of CONTRACTS) {
    const artifact = JSON.parse(fs.readFileSync(path.join(tmp, 'out', `${name}.sol`, `${name}.json`), 'utf8'));
    const exported = JSON.stringify({ abi: artifact.abi, bytecode: { object: artifact.bytecode.object } }, null, 2) + '\n';
    const target = path.join(abiDir, `${name}.json`);
    if (check) {
      const committed = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
      if (committed !== exported) drift.push(path.relative(root, target));
    } else {
      fs.writeFileSync(target, exported);
      console.log(`wrote ${path.relative(root, target)}`);
    }
  }
  if (drift.length > 0) {
    console.error(`export-abi: committed artifacts differ from a fresh forge build: ${drift.join(', ')}`);
    console.error('run scripts/export-abi.js and commit the result');
    process.exit(1);
  }
  if (check) console.log('export-abi: committed artifacts match a fresh forge build');
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
