// Drives the playground in Debian's Chromium (headless) like a person would: key in, start a call,
// hold "talk" while the fake microphone speaks, let go, wait for the agent's reply text, its latency
// waterfall and its audio, screenshot the page, hang up. Prints one JSON line with what the page showed.
//
//   RINGLINE_API_KEY=rl_... node run.mjs <base url> <screenshot.png> <speech.wav> <talk seconds>
//
// The fake microphone plays the WAV once (16-bit PCM) from getUserMedia on. WebRTC is loopback only:
// Chromium may use loopback (--allow-loopback-in-peer-connection) and the server offers 127.0.0.1 only
// and ignores the page's other candidates. Every wait is bounded; any failure exits non-zero.

import { chromium } from "playwright-core";

const [base, screenshot, wav, talkSeconds] = process.argv.slice(2);
const key = process.env.RINGLINE_API_KEY;
if (!base || !screenshot || !wav || !talkSeconds || !key) {
  console.error("usage: RINGLINE_API_KEY=... node run.mjs <base url> <screenshot.png> <speech.wav> <talk seconds>");
  process.exit(2);
}
const WAIT_MS = 20000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${wav}%noloop`,
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns,AutofillServerCommunication,OptimizationHints,MediaRouter",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", // no DNS look-up leaves the machine
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
  ],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 860 } });
  page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console: ${msg.text()}`); });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  await page.goto(`${base}/playground`);
  await page.fill("#api-key", key);
  await page.dispatchEvent("#api-key", "change");
  await page.waitForSelector("#agent option", { state: "attached", timeout: WAIT_MS });
  await page.click("#connect");
  await page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT_MS });
  const talk = await page.$("#talk");
  const box = await talk.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.mouse.down();
  await page.waitForTimeout(Number(talkSeconds) * 1000); // the fake microphone speaks meanwhile
  await page.mouse.up();
  await page.waitForSelector("#transcript li.assistant", { timeout: WAIT_MS });
  await page.waitForSelector("#waterfall .turn", { timeout: WAIT_MS });
  await page.waitForFunction(
    () => Number(document.getElementById("audio-in").dataset.energy) > 0, null, { timeout: WAIT_MS },
  );
  const shown = await page.evaluate(() => ({
    callId: window.playground.callId,
    status: document.getElementById("status").textContent,
    lines: [...document.querySelectorAll("#transcript li:not(.interim)")].map((li) => ({
      role: li.classList[0], text: li.lastChild.textContent,
    })),
    stages: [...document.querySelectorAll("#waterfall .turn .stage")].map((row) => ({
      stage: row.dataset.stage, ms: row.querySelector(".ms").textContent,
      width: row.querySelector(".fill").style.width,
    })),
    stats: window.playground.stats,
  }));
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.click("#hangup");
  console.log(JSON.stringify({ ...shown, problems }));
} catch (err) {
  console.error(`playground run failed: ${err.message}\n${problems.join("\n")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
