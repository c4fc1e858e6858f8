// The JavaScript runtime against Python's golden vectors (`make golden`), in Node with
// onnxruntime-node and with onnxruntime-web's wasm, and its refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { BundleError, InputError, loadBundle, parseTimestamp, useOrt } from '../src/index.js';
import { compareGolden, readGolden } from './golden.js';

const here = dirname(fileURLToPath(import.meta.url));
const golden = join(here, 'golden');

for (const backend of ['onnxruntime-node', 'onnxruntime-web']) {
  for (const name of ['mnist', 'table', 'series']) {
    test(`${name}: ${backend} gives Python's numbers`, async () => {
      useOrt(await import(backend), backend === 'onnxruntime-node' ? 'cpu' : 'wasm');
      const vector = await readGolden(golden, name);
      const report = await compareGolden(await loadBundle(join(golden, vector.bundle)), vector);
      assert.ok(report.checked > 0);
    });
  }
}

test('a stream fed numbers and timestamps gives what its CSV lines give', async () => {
  useOrt(await import('onnxruntime-node'), 'cpu');
  const vector = await readGolden(golden, 'series');
  const bundle = await loadBundle(join(golden, vector.bundle));
  const stream = bundle.stream();
  const lines = vector.lines.slice(1).filter((line) => line.includes(','));
  for (let i = 0; i < 400; i++) {
    const [stamp, cell] = lines[i].split(',');
    const out = await stream.push([cell === '' ? NaN : Number(cell)], stamp);
    assert.ok(Math.abs(out.score - vector.score[i]) <= 1e-5 * Math.abs(vector.score[i]), `reading ${i}`);
    assert.equal(out.timestamp, vector.timestamps[i]);
  }
  assert.equal(stream.report.outOfOrder, 2);
});

test('the manifest and the graphs are checked as Python checks them', async () => {
  useOrt(await import('onnxruntime-node'), 'cpu');
  const dir = await mkdtemp(join(tmpdir(), 'vae-edge-'));
  await cp(join(golden, 'table_model'), dir, { recursive: true });
  const manifest = JSON.parse(await readFile(join(dir, 'vae.json'), 'utf8'));

  await writeFile(join(dir, 'vae.json'), JSON.stringify({ ...manifest, format_version: 7 }));
  await assert.rejects(loadBundle(dir), (e) => e instanceof BundleError
    && e.message === `${dir}: invalid manifest: format_version 7 is not supported (this runtime reads 2)`);
  await writeFile(join(dir, 'vae.json'), JSON.stringify({ ...manifest, format_version: 1 }));
  await assert.rejects(loadBundle(dir), /format_version 1 is not supported .*vae-edge upgrade/);

  await writeFile(join(dir, 'vae.json'), JSON.stringify(manifest));
  const graph = await readFile(join(dir, 'loss.onnx'));
  graph[graph.length - 1] ^= 1;
  await writeFile(join(dir, 'loss.onnx'), graph);
  await assert.rejects(loadBundle(dir), (e) => e instanceof BundleError
    && e.message === `${dir}: loss.onnx does not match the sha256 in vae.json`);
  await assert.rejects(loadBundle(join(dir, 'nowhere')), /not a model bundle/);
});

test('bad input is refused in one line, with the messages of the golden vectors', async () => {
  useOrt(await import('onnxruntime-node'), 'cpu');
  for (const name of ['mnist', 'table']) {
    const vector = await readGolden(golden, name);
    const bundle = await loadBundle(join(golden, vector.bundle));
    for (const bad of vector.errors) {
      const data = Float32Array.from(bad.data, (v) => (v === null ? NaN : v));
      await assert.rejects(bundle.score({ data, shape: bad.shape }),
        (e) => e instanceof InputError && e.message === bad.message, `${name}: ${bad.case}`);
    }
  }
  const table = await loadBundle(join(golden, 'table_model'));
  await assert.rejects(table.score({ data: [1, 2], shape: [3] }), /input data has 2 values/);
  const series = await loadBundle(join(golden, 'series_model'));
  const stream = series.stream();
  assert.throws(() => stream.push([1, 2]), /this model takes 1 channel\(s\) per step/);
  assert.throws(() => stream.push([Infinity]), /the reading 0, channel 0, is infinite/);
  const out = await stream.push([NaN], 'not a time');
  assert.ok(Number.isFinite(out.score) && stream.report.unreadable === 1 && stream.report.missing === 1);
});

test('samples: seeded, in the data units, the same for the same seed', async () => {
  useOrt(await import('onnxruntime-node'), 'cpu');
  const bundle = await loadBundle(join(here, '../../runtime/default_model'));
  const a = await bundle.sample(4, { seed: 7 });
  const b = await bundle.sample(4, { seed: 7 });
  const c = await bundle.sample(4, { seed: 8 });
  assert.deepEqual(a.shape, [4, 28, 28]);
  assert.deepEqual(a.data, b.data);
  assert.notDeepEqual(a.data, c.data);
  assert.ok(a.data.every((v) => v >= 0 && v <= 255));
  const scores = await bundle.score({ data: a.data.map(Math.round), shape: a.shape });
  assert.ok(scores.every(Number.isFinite));
  await assert.rejects(bundle.sample(0), /n must be a positive integer/);
  await assert.rejects(bundle.predict({ data: a.data, shape: a.shape }), /has no threshold/);
});

test('timestamps are read as NumPy reads them', () => {
  assert.equal(parseTimestamp('2014-04-10 07:15:00'), Date.UTC(2014, 3, 10, 7, 15) / 1000);
  assert.equal(parseTimestamp('2014-04-10T07:15:00Z'), Date.UTC(2014, 3, 10, 7, 15) / 1000);
  assert.equal(parseTimestamp('2014-04-10'), Date.UTC(2014, 3, 10) / 1000);
  assert.equal(parseTimestamp('2014-04-10 07:15:00.9'), Date.UTC(2014, 3, 10, 7, 15) / 1000);
  assert.equal(parseTimestamp('2014-04-10 07:15:00+01:00'), Date.UTC(2014, 3, 10, 6, 15) / 1000);
  assert.equal(parseTimestamp('1397114100.7'), 1397114100);
  assert.equal(parseTimestamp('2014-02-30 00:00:00'), null);
  assert.equal(parseTimestamp('yesterday'), null);
  assert.equal(parseTimestamp(''), null);
});
