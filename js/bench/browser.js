// bench.js in headless Chromium (onnxruntime-web, wasm, one thread), and the page's time
// from the start of its navigation to its first score.
//   node bench/browser.js CASES.json   (prints the results as JSON)
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

import { startServer } from '../web/serve.js';
import { CHROMIUM_ARGS } from '../test/chromium.js';

const { cases, seconds, loads = 5, urls } = JSON.parse(await readFile(process.argv[2], 'utf8'));
const server = await startServer(0);
const url = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS });
try {
  const page = await browser.newPage();
  const firstScore = [];
  for (let i = 0; i < loads; i++) {
    await page.goto(`${url}/`);
    await page.waitForFunction(() => window.vaeEdge?.state.ready, null, { timeout: 120_000 });
    firstScore.push(await page.evaluate(() => window.vaeEdge.state.firstScoreMs));
  }
  await page.goto(`${url}/bench.html`);
  await page.waitForFunction(() => window.runBench !== undefined);
  const isolated = await page.evaluate(() => window.crossOriginIsolated);
  const results = await page.evaluate(([c, s]) => window.runBench(c, s), [cases, seconds]);
  const chromium = await page.evaluate((u) => window.runParity('/golden', u), urls);
  console.log(JSON.stringify({ results, parity: { chromium }, firstScoreMs: firstScore, crossOriginIsolated: isolated,
    userAgent: await page.evaluate(() => navigator.userAgent) }));
} finally {
  await browser.close();
  server.close();
}
