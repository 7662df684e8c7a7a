#!/usr/bin/env node
// Browser test of the dashboard that every QuackMesh node serves at `/`, run by
// scripts/dashboard-test.sh against a live `scripts/demo.sh --stay` network: headless Chromium
// (playwright-core, the system's browser) loads the page and checks what a person would see
// against independent sources:
//
//   - the accuracy chart has one point per finished round and the rounds table agrees with the
//     node's /api/job/<id>; at least one round is above 50 % accuracy;
//   - the marketplace table lists the providers' machines exactly as the chain does
//     (`quackmesh market list --json` read straight from the devnet, passed in MARKET_JSON);
//   - the transactions table shows real transactions: each shortened hash belongs to exactly one
//     0x + 64-hex hash the node reports, whose receipt the devnet's RPC returns (status 1, same
//     block, a log emitted by one of the deployed contracts).
//
// Environment: DASHBOARD_URL, RPC_URL, JOB_ID, DEPLOYMENT (record JSON), MARKET_JSON (file),
// EXPECT_PROVIDERS (default 3), CHROMIUM (default /usr/bin/chromium), SCREENSHOT (optional PNG
// path, 1400x900 viewport). Every wait is bounded; exits 1 on the first failed check.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined || v === "") throw new Error(`dashboard-test: ${k} is not set`);
  return v;
};
const url = env("DASHBOARD_URL");
const rpcUrl = env("RPC_URL");
const jobId = Number(env("JOB_ID"));
const deployment = JSON.parse(readFileSync(env("DEPLOYMENT"), "utf8"));
const chainMarket = JSON.parse(readFileSync(env("MARKET_JSON"), "utf8"));
const expectProviders = Number(env("EXPECT_PROVIDERS", "3"));
const executablePath = env("CHROMIUM", "/usr/bin/chromium");
const screenshot = process.env.SCREENSHOT || "";

let passed = 0;
function check(cond, what, detail = "") {
  if (!cond) throw new Error(`FAILED: ${what}${detail ? ` (${detail})` : ""}`);
  passed += 1;
  console.log(`  ok ${passed} - ${what}`);
}
async function getJson(path) {
  const r = await fetch(new URL(path, url), { signal: AbortSignal.timeout(10_000) });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}
async function rpc(method, params) {
  const r = await fetch(rpcUrl, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
    signal: AbortSignal.timeout(10_000),
  });
  const body = await r.json();
  if (body.error) throw new Error(`${method}: ${JSON.stringify(body.error)}`);
  return body.result;
}
// The rows of a table as arrays of cell texts (the page has a stable id on each table).
const rows = (page, id) =>
  page.$$eval(`#${id} tbody tr`, (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim())));

const browser = await chromium.launch({ executablePath, headless: true, timeout: 30_000 });
const stop = async () => { await browser.close().catch(() => {}); process.exit(1); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(30_000);
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const resp = await page.goto(url, { waitUntil: "load", timeout: 15_000 });
  check(resp && resp.ok(), "the dashboard page loads", `HTTP ${resp && resp.status()}`);
  check((await page.title()) === "QuackMesh node", "its title is 'QuackMesh node'");

  // Header: the node's PeerId, as /api/node says.
  const node = await getJson("/api/node");
  await page.waitForFunction((id) => document.getElementById("peer").textContent === id, node.peer_id, { timeout: 15_000 });
  check(/^12D3KooW[1-9A-HJ-NP-Za-km-z]+$/.test(node.peer_id), "the header shows the node's PeerId", node.peer_id);

  // Accuracy chart and rounds table, once the page has drawn the finished job.
  const job = await getJson(`/api/job/${jobId}`);
  const done = job.rounds_done;
  check(job.status === "finished" && done.length >= 1, `job ${jobId} finished with rounds`, `${job.status}, ${done.length} rounds`);
  await page.waitForFunction((n) => document.querySelectorAll("#chart circle").length === n, done.length, { timeout: 15_000 });
  const selected = await page.$eval("#job", (s) => s.options[s.selectedIndex]?.textContent || "");
  check(selected === `job ${jobId} (finished)`, "the job selector shows the finished job", selected);
  const points = await page.$$eval("#chart circle", (cs) => cs.map((c) => ({ cx: Number(c.getAttribute("cx")), cy: Number(c.getAttribute("cy")) })));
  check(points.length === done.length, `the chart has one point per round (${done.length})`);
  const line = await page.$eval("#accuracy-line", (l) => l.getAttribute("points").trim().split(/\s+/).length);
  check(line === done.length, "the accuracy line joins every point");
  check(points.every((p, i) => i === 0 || p.cx > points[i - 1].cx), "the points run left to right by round");
  for (let i = 0; i < done.length; i++) {
    for (let j = 0; j < done.length; j++) {
      if (done[i].accuracy_bps > done[j].accuracy_bps && !(points[i].cy < points[j].cy)) {
        check(false, "a higher accuracy is drawn higher", `rounds ${done[i].round} and ${done[j].round}`);
      }
    }
  }
  check(true, "higher accuracies are drawn higher");
  const table = await rows(page, "rounds");
  check(table.length === done.length, "the rounds table has a row per round", `${table.length} rows`);
  table.forEach((r, i) => {
    const want = [String(done[i].round), `${(done[i].accuracy_bps / 100).toFixed(2)}%`, String(done[i].term)];
    if (r[0] !== want[0] || r[1] !== want[1] || r[2] !== want[2]) check(false, "rounds table matches the API", `${r} vs ${want}`);
  });
  check(true, "the rounds table matches /api/job (round, accuracy, term)");
  const accs = table.map((r) => parseFloat(r[1]) / 100);
  check(accs.some((a) => a > 0.5), "at least one round is above 50 % accuracy", accs.join(", "));
  console.log(`     accuracy per round: ${accs.map((a) => a.toFixed(4)).join(", ")}`);

  // Marketplace: the machines the chain lists, each shown once with its price and PeerId.
  const listed = chainMarket.filter((m) => m.listed);
  check(listed.length === expectProviders, `the chain lists ${expectProviders} machines`, `${listed.length}`);
  await page.waitForFunction((n) => document.querySelectorAll("#market tbody tr td:not(.empty)").length >= n, expectProviders, { timeout: 15_000 });
  const market = await rows(page, "market");
  check(market.length === chainMarket.length, "the marketplace table has a row per machine on chain", `${market.length} rows`);
  for (const m of listed) {
    const row = market.find((r) => r[0] === String(m.machine_id));
    check(!!row, `machine ${m.machine_id} is listed on the dashboard`);
    const price = Number(BigInt(m.price_per_hour) * 10000n / 10n ** 18n) / 10000;
    check(Number(row[1].replace(/,/g, "")) === price, `machine ${m.machine_id}: price ${price} DUCK/h as on chain`, row[1]);
    check(row[2] === String(m.cpu_cores) && row[3] === String(m.ram_mb), `machine ${m.machine_id}: cpus and RAM as on chain`);
    check(row[5] === (m.rented ? "rented" : "available"), `machine ${m.machine_id}: status ${row[5]} as on chain`);
    const [head, tail] = row[6].split("…");
    check(m.peer_id.startsWith(head) && m.peer_id.endsWith(tail) && head.startsWith("12D3KooW"), `machine ${m.machine_id}: the provider's PeerId`, row[6]);
  }

  // Transactions: shortened on the page; each must be a real transaction of this chain.
  await page.waitForFunction(() => document.querySelectorAll("#txs tbody tr td.mono").length > 0, null, { timeout: 15_000 });
  const txRows = await rows(page, "txs");
  const apiTxs = await getJson("/api/transactions?limit=200");
  const contracts = new Set([deployment.duck_token, deployment.compute_marketplace, deployment.training_pool, deployment.inference_pool].map((a) => a.toLowerCase()));
  check(txRows.length >= 5, "the transactions table has rows", `${txRows.length}`);
  const kinds = new Set(txRows.map((r) => r[1]));
  console.log(`     transaction kinds shown: ${[...kinds].sort().join(", ")}`);
  const full = new Map(); // full hash -> block shown
  for (const [block, , , , shortHash] of txRows) {
    const m = /^(0x[0-9a-f]{8})…([0-9a-f]{6})$/.exec(shortHash);
    if (!m) check(false, "every tx cell is a shortened 0x hash", shortHash);
    const hits = [...new Set(apiTxs.map((t) => t.tx_hash).filter((h) => h.startsWith(m[1]) && h.endsWith(m[2])))];
    if (hits.length !== 1 || !/^0x[0-9a-f]{64}$/.test(hits[0])) check(false, "every tx cell names one 0x+64-hex hash", `${shortHash}: ${hits}`);
    full.set(hits[0], Number(block));
  }
  check(true, `all ${txRows.length} tx cells are shortened real hashes (0x + 64 hex, one each)`);
  for (const [hash, block] of full) {
    const receipt = await rpc("eth_getTransactionReceipt", [hash]);
    if (!receipt || receipt.status !== "0x1") check(false, "every transaction is mined with status 1", hash);
    if (Number(receipt.blockNumber) !== block) check(false, "every transaction is in the block shown", `${hash}: ${receipt.blockNumber} vs ${block}`);
    if (!receipt.logs.some((l) => contracts.has(l.address.toLowerCase()))) check(false, "every transaction has a log of a deployed contract", hash);
  }
  check(full.size >= 1, `all ${full.size} distinct transactions are on the devnet: status 1, in the block shown, logged by a deployed QuackMesh contract`);
  console.log(`     e.g. ${[...full.keys()][0]}`);

  check(errors.length === 0, "no JavaScript errors on the page", errors.join("; "));
  if (screenshot) {
    await page.screenshot({ path: screenshot, timeout: 15_000 });
    console.log(`     screenshot: ${screenshot}`);
  }
} catch (e) {
  failed = true;
  console.error(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close().catch(() => {});
}
console.log(failed ? `dashboard: ${passed} passed, 1 failed` : `dashboard: ${passed} passed, 0 failed`);
process.exit(failed ? 1 : 0);
