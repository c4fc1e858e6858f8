// The page in real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// its runtime gives the golden vectors' numbers, a drawn digit is scored as it is drawn,
// the example sensor plays as a stream with Python's likelihood and alarms. Screenshots go
// to docs/images/ (SCREENSHOTS=0 skips writing them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { startServer } from '../web/serve.js';
import { CHROMIUM_ARGS } from './chromium.js';

const here = dirname(fileURLToPath(import.meta.url));
const shots = join(here, '..', '..', 'docs', 'images');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

let server;
let browser;
let page;
let url;
const errors = [];

before(async () => {
  server = await startServer(0);
  url = `http://127.0.0.1:${server.address().port}/`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1140, height: 1300 } });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForFunction(() => window.vaeEdge?.state.ready, null, { timeout: 120_000 });
});

after(async () => {
  await browser?.close();
  server?.close();
});

test('the page loads with no error and samples digits', async () => {
  assert.deepEqual(errors, []);
  const status = await page.textContent('#status');
  assert.match(status, /first score came \d+ ms/);
  const inked = await page.evaluate(() => {
    const { data } = document.getElementById('samples').getContext('2d').getImageData(0, 0, 224, 224);
    let bright = 0;
    for (let i = 0; i < data.length; i += 4) bright += data[i] > 128;
    return bright;
  });
  assert.ok(inked > 1000, `${inked} bright pixels in the sample grid`);
});

for (const name of ['mnist', 'table', 'series']) {
  test(`${name}: Chromium's wasm gives Python's golden numbers`, async () => {
    const report = await page.evaluate(async (vectorName) => {
      const { loadBundle, compareGolden, readGolden } = window.vaeEdge;
      const vector = await readGolden('/golden', vectorName);
      const bundle = await loadBundle(`/golden/${vector.bundle}`.replace('/golden/../../../runtime/default_model', '/models/mnist'));
      return compareGolden(bundle, vector);
    }, name);
    assert.ok(report.checked > 0, JSON.stringify(report));
  });
}

test('a digit drawn on the canvas is scored as it is drawn', async () => {
  const box = await page.locator('#draw').boundingBox();
  await page.mouse.move(box.x + 150, box.y + 50);
  await page.mouse.down();
  for (let t = 0; t <= 1; t += 0.05) await page.mouse.move(box.x + 150 - 10 * t, box.y + 50 + 180 * t);
  await page.mouse.up();
  await page.waitForFunction(() => window.vaeEdge.state.drawn?.x.some((v) => v > 0));
  await page.waitForTimeout(300); // the last stroke's score
  const drawn = await page.evaluate(async () => {
    const { state, loadBundle } = window.vaeEdge;
    const bundle = await loadBundle('/models/mnist');
    const [again] = await bundle.score({ data: Float32Array.from(state.drawn.x), shape: [1, 28, 28] });
    return { ...state.drawn, again, shown: document.getElementById('score').textContent };
  });
  assert.ok(Number.isFinite(drawn.score) && drawn.score > 0);
  assert.equal(drawn.score, drawn.again);
  assert.equal(drawn.shown, drawn.score.toPrecision(5));
  if (process.env.SCREENSHOTS !== '0') {
    await page.locator('section', { has: page.locator('#draw') }).screenshot({ path: join(shots, 'web-draw.png') });
  }
});

test('the example sensor plays as a stream with Python likelihoods and alarms', async () => {
  await page.selectOption('#speed', '0');
  await page.click('#play');
  await page.waitForFunction(() => window.vaeEdge.state.sensor?.done, null, { timeout: 120_000 });
  const played = await page.evaluate(() => window.vaeEdge.state.sensor);
  const vector = JSON.parse(await readFile(join(here, 'golden', 'series.json'), 'utf8'));
  assert.equal(played.readings.length, vector.likelihood.length);
  played.readings.forEach((r, i) => {
    assert.ok(Math.abs(r.likelihood - vector.likelihood[i]) <= 1e-4, `reading ${i}`);
    assert.equal(r.isAnomaly ? 1 : 0, vector.is_anomaly[i], `reading ${i}`);
    assert.equal(r.inAlarm ? 1 : 0, vector.in_alarm[i], `reading ${i}`);
  });
  assert.equal(played.report.alarms, vector.report.alarms);
  assert.match(await page.textContent('#streamStatus'), /900 readings, 2 alarms/);
  if (process.env.SCREENSHOTS !== '0') await page.screenshot({ path: join(shots, 'web-page.png'), fullPage: true });
  assert.deepEqual(errors, []);
});
