// Compares a bundle's numbers in this JavaScript engine with Python's golden vectors
// (tests/make_golden.py). Shared by the Node tests, the page in Chromium and bench-js: no
// Node-only imports. The targets: scores within 1e-5 relative, per-feature losses within
// 1e-5 of the sample's largest, the likelihood within 1e-4, flags and alarms identical.
import { readBytes, join } from '../src/ort.js';

export const SCORE_RTOL = 1e-5;
export const LIKELIHOOD_ATOL = 1e-4;

export async function readGolden(folder, name) {
  return JSON.parse(new TextDecoder().decode(await readBytes(join(folder, `${name}.json`))));
}

const asFloat32 = (values) => Float32Array.from(values, (v) => (v === null ? NaN : v));

function relative(got, want, floor = 0) {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const diff = Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), floor, 1e-30);
    worst = Math.max(worst, Number.isNaN(diff) ? Infinity : diff);
  }
  return worst;
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** Checks the bundle against one golden vector; throws on a mismatch, else returns the
 * largest differences seen. */
export async function compareGolden(bundle, vector) {
  const report = { checked: 0 };
  if (vector.lines) {
    const stream = bundle.stream();
    const out = [];
    for (const line of vector.lines) {
      const r = await stream.pushLine(line);
      if (r !== null) out.push(r);
    }
    expect(out.length === vector.score.length, `${out.length} readings, Python ${vector.score.length}`);
    report.maxRelScore = relative(out.map((r) => r.score), vector.score);
    report.maxLikelihoodDiff = Math.max(...out.map((r, i) => Math.abs(r.likelihood - vector.likelihood[i])));
    const flags = out.map((r) => (r.isAnomaly ? 1 : 0));
    const mismatch = flags.findIndex((f, i) => f !== vector.is_anomaly[i]);
    expect(report.maxRelScore <= SCORE_RTOL, `stream scores differ by ${report.maxRelScore} relative`);
    expect(report.maxLikelihoodDiff <= LIKELIHOOD_ATOL, `likelihoods differ by ${report.maxLikelihoodDiff}`);
    expect(mismatch < 0, `reading ${mismatch}: is_anomaly ${flags[mismatch]}, Python ${vector.is_anomaly[mismatch]}`);
    const held = out.map((r) => (r.inAlarm ? 1 : 0));
    const heldMismatch = held.findIndex((f, i) => f !== vector.in_alarm[i]);
    expect(heldMismatch < 0, `reading ${heldMismatch}: in_alarm ${held[heldMismatch]}, Python ${vector.in_alarm[heldMismatch]}`);
    for (const [key, value] of Object.entries(vector.report)) {
      expect(stream.report[key] === value, `report.${key} ${stream.report[key]}, Python ${value}`);
    }
    report.alarms = stream.report.alarms;
    report.checked = out.length;
    return report;
  }
  const input = { data: asFloat32(vector.input.data), shape: vector.input.shape };
  const scores = await bundle.score(input);
  report.maxRelScore = relative(scores, vector.score);
  expect(report.maxRelScore <= SCORE_RTOL, `scores differ by ${report.maxRelScore} relative`);
  const rows = vector.features.shape[0];
  const features = await bundle.featureScores({
    data: input.data.subarray(0, rows * (input.data.length / input.shape[0])),
    shape: [rows, ...input.shape.slice(1)],
  });
  // each sample's losses against the largest of that sample's
  const width = features.data.length / rows;
  report.maxRelFeatures = 0;
  for (let r = 0; r < rows; r++) {
    const want = vector.features.data.slice(r * width, (r + 1) * width);
    const largest = Math.max(...want.map(Math.abs));
    report.maxRelFeatures = Math.max(report.maxRelFeatures,
      relative(features.data.subarray(r * width, (r + 1) * width), want, largest));
  }
  expect(report.maxRelFeatures <= SCORE_RTOL, `feature losses differ by ${report.maxRelFeatures} of the sample's largest`);
  const { threshold, is_anomaly: want } = vector.predict;
  const flags = await bundle.predict(input, threshold === null ? {} : { threshold });
  const mismatch = Array.from(flags).findIndex((f, i) => f !== want[i]);
  expect(mismatch < 0, `sample ${mismatch}: is_anomaly ${flags[mismatch]}, Python ${want[mismatch]}`);
  report.checked = scores.length;
  return report;
}

export { join };
