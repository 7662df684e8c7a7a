#!/usr/bin/env node
// A `solc` for forge, backed by the npm `solc` package (no native solc binary exists here).
//
// forge calls its compiler two ways, and this answers both:
//   solc --version                      -> prints a `Version: X.Y.Z+commit...` line
//   solc [--base-path P] [--include-path P]... [--allow-paths ...] --standard-json  (JSON on stdin)
// Imports the input does not carry are read from disk, resolved against the base path and the
// include paths; anything outside them is refused, as native solc refuses paths not allowed.
'use strict';

const fs = require('fs');
const path = require('path');

function loadSolc() {
  // Resolve from this file's repository first, then from the current directory.
  const roots = [path.join(__dirname, '..'), process.cwd()];
  for (const root of roots) {
    try {
      return require(require.resolve('solc', { paths: [root] }));
    } catch (_) {
      // try the next root
    }
  }
  process.stderr.write('solc.js: the npm package `solc` is not installed (run `npm ci`)\n');
  process.exit(1);
}

function parseArgs(argv) {
  const opts = { version: false, standardJson: false, basePath: null, includePaths: [], allowPaths: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) {
        process.stderr.write(`solc.js: ${a} needs a value\n`);
        process.exit(1);
      }
      return argv[++i];
    };
    if (a === '--version') opts.version = true;
    else if (a === '--standard-json') opts.standardJson = true;
    else if (a === '--base-path') opts.basePath = value();
    else if (a === '--include-path') opts.includePaths.push(value());
    else if (a === '--allow-paths') opts.allowPaths.push(...value().split(',').filter(Boolean));
    else if (a.startsWith('--base-path=')) opts.basePath = a.slice('--base-path='.length);
    else if (a.startsWith('--include-path=')) opts.includePaths.push(a.slice('--include-path='.length));
    else if (a.startsWith('--allow-paths=')) opts.allowPaths.push(...a.slice('--allow-paths='.length).split(',').filter(Boolean));
    // Other flags (--no-import-callback, optimizer flags) do not apply to standard JSON input.
  }
  return opts;
}

function isInside(file, dir) {
  const rel = path.relative(dir, file);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

function makeImportCallback(opts) {
  const base = path.resolve(opts.basePath || process.cwd());
  const roots = [base, ...opts.includePaths.map((p) => path.resolve(base, p))];
  const allowed = [...roots, ...opts.allowPaths.map((p) => path.resolve(base, p))];
  return function findImport(importPath) {
    const candidates = path.isAbsolute(importPath)
      ? [importPath]
      : roots.map((r) => path.join(r, importPath));
    for (const file of candidates) {
      const resolved = path.resolve(file);
      if (!allowed.some((dir) => isInside(resolved, dir))) continue;
      try {
        return { contents: fs.readFileSync(resolved, 'utf8') };
      } catch (_) {
        // not here; try the next root
      }
    }
    return { error: `File not found in base or include paths: ${importPath}` };
  };
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const solc = loadSolc();
  if (opts.version) {
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return;
  }
  if (!opts.standardJson) {
    process.stderr.write('solc.js: only --version and --standard-json are supported\n');
    process.exit(1);
  }
  const input = fs.readFileSync(0, 'utf8');
  const output = solc.compile(input, { import: makeImportCallback(opts) });
  process.stdout.write(output);
}

main();
