// A bundle in JavaScript: the manifest, checked, and the four graphs chained as
// docs/bundle-format.md specifies (prepare -> encoder -> z -> decoder -> loss). The only
// arithmetic here is the reparameterization z = mu + exp(logvar / 2) * eps, which never
// goes inside a graph, and turning the decoder's output into samples.

import { getOrt, join, provider, readBytes, sha256Hex } from './ort.js';
import { BundleError, InputError, readManifest } from './manifest.js';
import { Stream } from './stream.js';
import { normalDraws } from './random.js';

const MANIFEST_FILE = 'vae.json';
const LOGVAR_MAX = 30;
const BATCH_ROWS = 1024; // rows of one chain of graph calls

/**
 * Load a bundle folder: a path in Node, a URL in a browser (or in Node, http(s)).
 * Checks the manifest and each graph's sha256 before onnxruntime reads it.
 */
export async function loadBundle(pathOrUrl) {
  const where = String(pathOrUrl).replace(/\/+$/, '') || String(pathOrUrl);
  let text;
  try {
    text = new TextDecoder().decode(await readBytes(join(where, MANIFEST_FILE)));
  } catch {
    throw new BundleError(`${where}: not a model bundle (no ${MANIFEST_FILE})`);
  }
  const manifest = readManifest(text, where);
  const ort = await getOrt();
  const names = ['prepare', 'encoder', 'decoder', 'loss'];
  // fetched together (a page's first score waits on them), checked in order
  const files = await Promise.allSettled(names.map((name) => readBytes(join(where, manifest[name].file))));
  const sessions = {};
  for (const [i, name] of names.entries()) {
    const graph = manifest[name];
    if (files[i].status === 'rejected') throw new BundleError(`${where}: missing graph file ${graph.file}`);
    const bytes = files[i].value;
    if ((await sha256Hex(bytes)) !== graph.sha256) {
      throw new BundleError(`${where}: ${graph.file} does not match the sha256 in ${MANIFEST_FILE}`);
    }
    try {
      sessions[name] = await ort.InferenceSession.create(bytes, {
        executionProviders: [provider()],
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        executionMode: 'sequential',
      });
    } catch (e) {
      const first = String(e.message ?? e).split('\n')[0];
      throw new BundleError(`${where}: ${graph.file} is not a loadable ONNX graph (${first})`);
    }
    const inputs = sessions[name].inputNames;
    const outputs = sessions[name].outputNames;
    if (String(inputs) !== String(graph.inputs) || String(outputs) !== String(graph.outputs)) {
      throw new BundleError(`${where}: ${graph.file} has inputs ${JSON.stringify(inputs)} and `
        + `outputs ${JSON.stringify(outputs)}; the manifest says ${JSON.stringify(graph.inputs)} `
        + `and ${JSON.stringify(graph.outputs)}`);
    }
  }
  return new Bundle(manifest, sessions, ort, where);
}

export class Bundle {
  constructor(manifest, sessions, ort, source) {
    this.manifest = manifest;
    this.sessions = sessions;
    this.ort = ort;
    this.source = source;
    const { eps } = manifest.defaultScore;
    this.eps = eps ? Float32Array.from(eps.flat()) : null;
  }

  get inputShape() {
    return [...this.manifest.inputShape];
  }

  /** The threshold stored in the manifest, or null. */
  get threshold() {
    return this.manifest.threshold?.value ?? null;
  }

  /**
   * The model's default score per sample (Float32Array, higher = more anomalous), the
   * number Python's `EdgeVAE.score(x)` gives. A windowed model's series (shape [T] or
   * [T, C]): each reading's score, as a stream gives it.
   */
  async score(input) {
    if (this.isSeries(input)) return (await this.streamAll(input)).score;
    return (await this.run(input)).score;
  }

  /** Each feature's loss ({data: Float32Array, shape}): which features make a sample
   * anomalous (Python's `feature_scores`). A series: each reading's loss per channel over
   * the window ending at it. */
  async featureScores(input) {
    if (this.isSeries(input)) {
      const out = await this.streamAll(input, true);
      return { data: out.features, shape: [out.score.length, this.manifest.series.channels.length] };
    }
    const out = await this.run(input);
    return { data: out.features, shape: [out.score.length, ...this.manifest.inputShape] };
  }

  /** score > threshold per sample (Uint8Array of 0/1); a series: each reading's alarm. */
  async predict(input, { threshold } = {}) {
    if (this.isSeries(input)) return (await this.streamAll(input, false, threshold)).isAnomaly;
    const t = this.manifest.threshold;
    if (threshold === undefined) {
      if (t === null) throw new BundleError(`${this.source}: the model has no threshold; predict needs one`);
      const d = this.manifest.defaultScore;
      if (t.scoreType !== d.scoreType || t.samples !== d.samples || t.complexity !== d.complexity
          || (t.samples > 0 && t.seed !== 0)) {
        throw new BundleError(`${this.source}: the threshold was calibrated on another score `
          + `(${t.scoreType}, samples ${t.samples}, seed ${t.seed}) than the graphs compute `
          + `(${d.scoreType}, samples ${d.samples}); calibrate it again with the default score`);
      }
    } else if (!Number.isFinite(threshold)) {
      throw new InputError(`threshold must be a finite number, got ${threshold}`);
    }
    return (await this.run(input, threshold ?? t.value)).isAnomaly;
  }

  /**
   * n new samples ({data: Float32Array, shape: [n, ...inputShape]}) in the data's units:
   * z ~ N(0, I) from a seeded JavaScript generator (xoshiro128** and Box-Muller; its draws
   * differ from NumPy's, so the samples differ from Python's for the same seed), decoded.
   */
  async sample(n, { seed = 0 } = {}) {
    if (!Number.isInteger(n) || n < 1) throw new InputError(`n must be a positive integer, got ${n}`);
    if (!Number.isInteger(seed) || seed < 0) throw new InputError(`seed must be an integer >= 0, got ${seed}`);
    const k = this.manifest.latentDim;
    const z = normalDraws(seed, n * k);
    const params = await this.runGraph('decoder', { [this.manifest.decoder.inputs[0]]: this.tensor(z, [n, k]) });
    return { data: this.decoderMean(params[this.manifest.decoder.outputs[0]].data), shape: [n, ...this.manifest.inputShape] };
  }

  /** A stream of a windowed model's readings: `await stream.push(values, timestamp)`. */
  stream({ threshold, adapt = true } = {}) {
    if (!this.manifest.series) throw new InputError(`${this.source}: not a windowed model (no series in vae.json)`);
    return new Stream(this, { threshold, adapt });
  }

  // -- the chain ---------------------------------------------------------------------------

  /** Scores, per-feature losses, flags and (series) each window's newest-step loss of
   * samples given as {data, shape}, in batches of BATCH_ROWS rows. */
  async run(input, threshold = Infinity) {
    const { x, n } = this.samples(input);
    const width = this.manifest.nFeatures;
    const out = {
      score: new Float32Array(n),
      features: new Float32Array(n * width),
      isAnomaly: new Uint8Array(n),
      newest: new Float64Array(n),
    };
    for (let start = 0; start < n; start += BATCH_ROWS) {
      const rows = Math.min(BATCH_ROWS, n - start);
      const part = await this.runBatch(x.subarray(start * width, (start + rows) * width), rows, threshold, start);
      out.score.set(part.score.data, start);
      out.features.set(part.features.data, start * width);
      out.isAnomaly.set(part.is_anomaly.data, start);
      if (part.newest) out.newest.set(part.newest.data, start);
    }
    return out;
  }

  /** One batch of raw samples x (Float32Array, rows x nFeatures) through the four graphs. */
  async runBatch(x, rows, threshold = Infinity, first = 0) {
    const m = this.manifest;
    const shape = [rows, ...m.inputShape];
    const xTensor = this.tensor(x, shape);
    const { xp } = await this.runGraph('prepare', { x: xTensor });
    if (m.likelihood === 'bernoulli') this.checkRange(x, xp.data, first);
    const encoded = await this.runGraph('encoder', { [m.encoder.inputs[0]]: xp });
    const mu = encoded[m.encoder.outputs[0]];
    const logvar = encoded[m.encoder.outputs[1]];
    const feeds = { x: xTensor, mu, logvar, threshold: this.tensor(Float32Array.of(threshold), []) };
    const k = m.latentDim;
    let z = mu;
    if (this.eps) {
      // the reparameterization, outside the graphs, in float32 as NumPy computes it
      const draws = m.defaultScore.samples;
      const zs = new Float32Array(rows * draws * k);
      const eps = new Float32Array(rows * draws * k);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < k; j++) {
          const s = Math.fround(Math.exp(Math.fround(0.5 * Math.min(logvar.data[r * k + j], LOGVAR_MAX))));
          for (let l = 0; l < draws; l++) {
            const e = this.eps[l * k + j];
            const i = (r * draws + l) * k + j;
            eps[i] = e;
            zs[i] = Math.fround(mu.data[r * k + j] + Math.fround(s * e));
          }
        }
      }
      feeds.z = this.tensor(zs, [rows, draws, k]);
      feeds.eps = this.tensor(eps, [rows, draws, k]);
      z = this.tensor(zs, [rows * draws, k]);
    }
    const decoded = await this.runGraph('decoder', { [m.decoder.inputs[0]]: z });
    feeds.params = decoded[m.decoder.outputs[0]];
    return this.runGraph('loss', feeds);
  }

  async runGraph(name, feeds) {
    return this.sessions[name].run(feeds);
  }

  tensor(data, dims) {
    return new this.ort.Tensor(data instanceof Float64Array ? 'float64' : 'float32', data, dims);
  }

  // -- input checks --------------------------------------------------------------------------

  isSeries(input) {
    return this.manifest.series !== null && (input?.shape?.length ?? 3) < 3;
  }

  /** {data, shape} -> Float32Array of (n, ...inputShape) and n, checked as Python checks. */
  samples(input) {
    const m = this.manifest;
    const { data } = input ?? {};
    let shape = input?.shape;
    if (!data || typeof data.length !== 'number' || !Array.isArray(shape)) {
      throw new InputError('input must be {data, shape}: a typed array of numbers and its shape');
    }
    const size = shape.reduce((a, b) => a * b, 1);
    if (size !== data.length) {
      throw new InputError(`input data has ${data.length} values; shape (${shape.join(', ')}) holds ${size}`);
    }
    const expected = m.inputShape;
    if (String(shape) === String(expected)) shape = [1, ...expected];
    else if (shape.length === 2 && expected.length > 1 && shape[1] === m.nFeatures) shape = [shape[0], ...expected];
    if (shape.length !== expected.length + 1 || String(shape.slice(1)) !== String(expected)) {
      const flat = expected.length > 1 ? ` or (N, ${m.nFeatures})` : '';
      throw new InputError(`input has shape ${tuple(shape)}; this model takes samples of shape `
        + `${tuple(expected)} (arrays (N, ${expected.join(', ')})${flat})`);
    }
    const x = data instanceof Float32Array ? data : Float32Array.from(data);
    if (m.series) {  // a series' windows: NaN is a missing reading, infinity is refused
      const i = x.findIndex((v) => v === Infinity || v === -Infinity);
      if (i >= 0) {
        const [w, c] = m.inputShape;
        const sample = Math.floor(i / (w * c));
        throw new InputError(`the reading of step ${sample + Math.floor((i % (w * c)) / c)}, `
          + `channel ${i % c}, is infinite`);
      }
    } else {
      for (let i = 0; i < data.length; i++) {
        if (!Number.isFinite(data[i])) {
          const row = Math.floor(i / m.nFeatures);
          throw new InputError(`input has NaN or infinite values (first in sample ${row}, `
            + `feature ${tuple(unravel(i % m.nFeatures, expected))})`);
        }
      }
    }
    if (m.greyLevels && !this.warned && x.length) {
      let max = -Infinity;
      for (const v of x) if (v > max) max = v;
      if (max > 0 && max <= 1) {
        this.warned = true; // once, as Python's InputWarning
        console.warn('input values are all within [0, 1] but this model was trained on uint8 data '
          + '(0..255); if the data is scaled to [0, 1], multiply it by 255');
      }
    }
    return { x, n: shape[0] };
  }

  /** A Bernoulli model's input scaled into [0, 1], as Python's Bernoulli.prepare refuses. */
  checkRange(x, xp, first) {
    let low = Infinity;
    let high = -Infinity;
    for (const v of xp) {
      if (v < low) low = v;
      if (v > high) high = v;
    }
    if (xp.length && (low < 0 || high > 1)) {
      let min = Infinity;
      let max = -Infinity;
      for (const v of x) {
        if (v < min) min = v;
        if (v > max) max = v;
      }
      const top = Math.fround(1 / Math.fround(this.manifest.preprocessing.scale));
      throw new InputError(`input values must lie in [0, ${g(top)}] for this model (found ${g(min)} to ${g(max)})`);
    }
  }

  /** The decoder's output -> the data's units (Python's likelihood.mean). */
  decoderMean(params) {
    const p = this.manifest.preprocessing;
    const out = new Float32Array(params.length);
    if (this.manifest.likelihood === 'bernoulli') {
      const scale = Math.fround(p.scale);
      for (let i = 0; i < params.length; i++) {
        out[i] = Math.fround(1 / Math.fround(1 + Math.fround(Math.exp(-params[i])))) / scale;
      }
      return out;
    }
    const c = p.mean.length;
    for (let i = 0; i < params.length; i++) {
      out[i] = Math.fround(params[i] * Math.fround(p.std[i % c])) + Math.fround(p.mean[i % c]);
    }
    return out;
  }

  /** A whole series through a fresh stream: each reading's numbers. */
  async streamAll(input, perFeature = false, threshold = undefined) {
    const channels = this.manifest.series.channels.length;
    const { data, shape } = input;
    if (!(shape.length === 1 && channels === 1) && !(shape.length === 2 && shape[1] === channels)) {
      throw new InputError(`readings have shape ${tuple(shape)}; this model takes ${channels} channel(s) per step`);
    }
    const steps = shape[0];
    const stream = new Stream(this, { threshold, perFeature });
    const out = { score: new Float32Array(steps), likelihood: new Float64Array(steps),
      isAnomaly: new Uint8Array(steps), features: new Float32Array(perFeature ? steps * channels : 0) };
    for (let i = 0; i < steps; i++) {
      const r = await stream.push(Array.from(data.subarray
        ? data.subarray(i * channels, (i + 1) * channels) : data.slice(i * channels, (i + 1) * channels)));
      out.score[i] = r.score;
      out.likelihood[i] = r.likelihood;
      out.isAnomaly[i] = r.isAnomaly ? 1 : 0;
      if (perFeature) out.features.set(r.features, i * channels);
    }
    return out;
  }
}

function tuple(shape) {
  return shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
}

function unravel(i, shape) {
  const out = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    out.unshift(i % shape[d]);
    i = Math.floor(i / shape[d]);
  }
  return out;
}

/** A number as Python's format `:g` writes it (6 significant digits). */
export function g(v) {
  if (!Number.isFinite(v)) return String(v).replace('Infinity', 'inf');
  if (v === 0) return '0';
  const exponent = Math.floor(Math.log10(Math.abs(v)));
  if (exponent < -4 || exponent >= 6) {
    const [mantissa, e] = v.toExponential(5).split('e');
    const m = mantissa.includes('.') ? mantissa.replace(/\.?0+$/, '') : mantissa;
    const n = Number(e);
    return `${m}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  return String(Number(v.toPrecision(6)));
}
