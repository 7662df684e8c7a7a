#!/usr/bin/env node
// Screenshots of a live dashboard at a fixed interval, for scripts/record-demo.sh: waits for
// DASHBOARD_URL= in READY_FILE (written by scripts/demo.sh --ready-file), then loads the page in
// headless Chromium and writes FRAMES_DIR/frame-NNNN.png every INTERVAL_MS until FINISHED= is
// in READY_FILE and TAIL_MS more have passed (or MAX_SECS in all). Each frame's time since the
// first is written to FRAMES_DIR/times.txt. Every wait is bounded; exits 1 on failure.
import { readFileSync, writeFileSync, appendFileSync } from "node:fs";
import { chromium } from "playwright-core";

const readyFile = process.env.READY_FILE;
const dir = process.env.FRAMES_DIR;
const interval = Number(process.env.INTERVAL_MS || 1000);
const tail = Number(process.env.TAIL_MS || 4000);
const maxSecs = Number(process.env.MAX_SECS || 600);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const width = Number(process.env.WIDTH || 1400), height = Number(process.env.HEIGHT || 900);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const value = (k) => {
  try {
    const m = readFileSync(readyFile, "utf8").match(new RegExp(`^${k}=(.*)$`, "m"));
    return m ? m[1] : null;
  } catch { return null; }
};

const t0 = Date.now();
let url = null;
while (!(url = value("DASHBOARD_URL"))) {
  if (Date.now() - t0 > maxSecs * 1000) { console.error("record-demo: no DASHBOARD_URL"); process.exit(1); }
  await sleep(200);
}
const browser = await chromium.launch({ executablePath, headless: true, timeout: 30_000 });
const stop = async () => { await browser.close().catch(() => {}); process.exit(1); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
let rc = 0;
try {
  const page = await browser.newPage({ viewport: { width, height } });
  await page.goto(url, { waitUntil: "load", timeout: 15_000 });
  await page.waitForFunction(() => !document.getElementById("peer").textContent.startsWith("connecting"), null, { timeout: 15_000 });
  writeFileSync(`${dir}/times.txt`, "");
  const start = Date.now();
  let finishedAt = null;
  for (let i = 0; ; i++) {
    const due = start + i * interval;
    if (due > Date.now()) await sleep(due - Date.now());
    const name = `${dir}/frame-${String(i).padStart(4, "0")}.png`;
    await page.screenshot({ path: name, timeout: 10_000 });
    appendFileSync(`${dir}/times.txt`, `${Date.now() - start}\n`);
    if (finishedAt === null && value("FINISHED")) finishedAt = Date.now();
    if (finishedAt !== null && Date.now() - finishedAt >= tail) break;
    if (Date.now() - t0 > maxSecs * 1000) { console.error("record-demo: the demo did not finish in time"); rc = 1; break; }
  }
  console.log(`record-demo: ${readFileSync(`${dir}/times.txt`, "utf8").trim().split("\n").length} frames over ${((Date.now() - start) / 1000).toFixed(1)} s`);
} catch (e) {
  console.error(String(e && e.stack ? e.stack : e));
  rc = 1;
} finally {
  await browser.close().catch(() => {});
}
process.exit(rc);
