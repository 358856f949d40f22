// Runs examples/clients/browser/index.html in the system's headless Chromium (driven by
// playwright-core, which never downloads a browser here): its backend (server.mjs) mints a
// browser token with the key, the page holds a text turn and an audio turn through livegate,
// and this prints the page's result as one JSON line and saves a screenshot.
//
//   LIVEGATE_API_KEY=lg-... node browser.mjs <gateway http base> <screenshot.png> [chromium]

import { require } from "./modules.mjs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { start } from "../../../examples/clients/browser/server.mjs";

const { chromium } = require("playwright-core");

const [gateway, screenshot, executablePath = "/usr/bin/chromium"] = process.argv.slice(2);
const key = process.env.LIVEGATE_API_KEY;
if (!gateway || !screenshot || !key) {
  console.error("usage: LIVEGATE_API_KEY=... node browser.mjs <gateway> <screenshot.png> [chromium]");
  process.exit(2);
}

// Flags for a container without a GPU, a sandbox or any network but loopback.
const args = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];

const profile = await mkdtemp(join(tmpdir(), "livegate-chromium-"));
const server = await start({ gateway, key });
let context;
let exitCode = 1;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    args,
    headless: true,
    timeout: 30_000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const logs = [];
  page.on("console", (m) => logs.push(`console.${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`page error: ${e.message}`));
  const ws = gateway.replace(/^http/, "ws");
  const url = `http://127.0.0.1:${server.address().port}/?auto=1&gateway=${encodeURIComponent(ws)}`;
  await page.goto(url, { timeout: 30_000 });
  let result;
  try {
    await page.waitForFunction(() => window.livegateResult !== undefined, null, { timeout: 45_000 });
    result = await page.evaluate(() => window.livegateResult);
  } catch (e) {
    result = { ok: false, error: `no result from the page: ${e.message}` };
  }
  result.log = await page.locator("#log").textContent();
  result.consoleLogs = logs;
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(result));
  exitCode = result.ok ? 0 : 1;
} finally {
  await context?.close();
  server.close();
  await rm(profile, { recursive: true, force: true });
}
process.exit(exitCode);
