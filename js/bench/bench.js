// What benchmarks/js.py measures in Node and in Chromium: the same calls on the same inputs
// as its Python side. No Node-only imports: the page /bench.html runs it too.
//   node bench/bench.js CASES.json   (prints the results as JSON)

const now = () => performance.now();

function percentile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor((q / 100) * sorted.length))];
}

async function timeCalls(fn, seconds) {
  for (let i = 0; i < 5; i++) await fn(); // warm-up: first calls allocate and pick kernels
  const times = [];
  const end = now() + seconds * 1000;
  while (now() < end || times.length < 5) {
    const t0 = now();
    await fn();
    times.push((now() - t0) * 1000);
  }
  return times.sort((a, b) => a - b);
}

function tile(sample, rows) {
  const out = new Float32Array(sample.length * rows);
  for (let r = 0; r < rows; r++) out.set(sample, r * sample.length);
  return out;
}

/** One case: {name, bundle (URL or path), sample (numbers of one sample), shape, lines (a
 * series' CSV lines)} -> batch-1 p50/p99 (us), batch-4096 samples a second, stream p50. */
export async function benchCase(loadBundle, c, seconds = 2) {
  const bundle = await loadBundle(c.bundle);
  const result = { name: c.name };
  if (c.lines) {
    let stream = bundle.stream();
    let i = 0;
    const times = await timeCalls(async () => {
      if (i === c.lines.length) {
        stream = bundle.stream();
        i = 0;
      }
      await stream.pushLine(c.lines[i++]);
    }, seconds);
    return { ...result, stream_p50_us: percentile(times, 50), stream_p99_us: percentile(times, 99), calls: times.length };
  }
  const sample = Float32Array.from(c.sample);
  const one = { data: sample, shape: [1, ...c.shape] };
  const single = await timeCalls(() => bundle.score(one), seconds);
  const big = { data: tile(sample, 4096), shape: [4096, ...c.shape] };
  const batch = await timeCalls(() => bundle.score(big), seconds);
  return {
    ...result,
    p50_us: percentile(single, 50),
    p99_us: percentile(single, 99),
    calls: single.length,
    batch4096_samples_per_s: 4096 / (percentile(batch, 50) / 1e6),
  };
}

export async function benchAll(loadBundle, cases, seconds) {
  const out = [];
  for (const c of cases) out.push(await benchCase(loadBundle, c, seconds));
  return out;
}

/** The golden vectors (Python's numbers) against this engine: the largest differences. */
export async function parity(loadBundle, golden, bundles) {
  const { compareGolden, readGolden } = await import('../test/golden.js');
  const out = {};
  for (const name of ['mnist', 'table', 'series']) {
    const vector = await readGolden(golden, name);
    out[name] = await compareGolden(await loadBundle(bundles[name]), vector);
  }
  return out;
}

if (typeof process !== 'undefined' && process.argv?.[1]?.endsWith('bench.js')) {
  const { readFile } = await import('node:fs/promises');
  const { loadBundle, useOrt } = await import('../src/index.js');
  const { cases, seconds, golden, bundles } = JSON.parse(await readFile(process.argv[2], 'utf8'));
  useOrt(await import('onnxruntime-web'), 'wasm');
  const wasm = await parity(loadBundle, golden, bundles);
  useOrt(await import('onnxruntime-node'), 'cpu');
  const node = await parity(loadBundle, golden, bundles);
  // the timings: onnxruntime-node
  console.log(JSON.stringify({ results: await benchAll(loadBundle, cases, seconds), parity: { node, wasm } }));
}
