// vae.json, validated as the Python runtime validates it (runtime/manifest.py), with the
// same one-line messages. This runtime reads format 2: the bundle's score graphs.

export const FORMAT_VERSION = 2;
const LIKELIHOODS = { bernoulli: 'logits', gaussian: 'mean' };
const SCORE_TYPES = ['recon', 'elbo', 'iwae'];
export const ALARM_THRESHOLD = 0.5;

export class VAEEdgeError extends Error {
  constructor(message) {
    super(message);
    this.name = this.constructor.name;
  }
}
/** The data given to the model is not acceptable. */
export class InputError extends VAEEdgeError {}
/** A bundle is missing, malformed, tampered with or inconsistent. */
export class BundleError extends VAEEdgeError {}

function check(condition, message) {
  if (!condition) throw new BundleError(`invalid manifest: ${message}`);
}

const isInt = (v) => Number.isInteger(v);
const isNumber = (v) => typeof v === 'number' && Number.isFinite(v);
const typeName = (v) =>
  v === null ? 'NoneType' : Array.isArray(v) ? 'list' : typeof v === 'object' ? 'dict'
    : typeof v === 'string' ? 'str' : typeof v === 'boolean' ? 'bool'
    : isInt(v) ? 'int' : 'float';

function get(d, key, kind, parent = '') {
  const name = parent ? `${parent}.${key}` : key;
  check(key in d, `missing field '${name}'`);
  const v = d[key];
  const ok = {
    int: isInt(v),
    float: isNumber(v),
    str: typeof v === 'string',
    list: Array.isArray(v),
    dict: v !== null && typeof v === 'object' && !Array.isArray(v),
  }[kind];
  check(ok, `field '${name}' must be of type ${kind}, got ${typeName(v)}`);
  return v;
}

function numbers(d, key, n) {
  const values = get(d, key, 'list', 'preprocessing');
  check(values.length === n && values.every(isNumber),
    `preprocessing.${key} must be a list of ${n} finite numbers`);
  return values;
}

function preprocessing(d, nFeatures) {
  const kind = get(d, 'kind', 'str', 'preprocessing');
  if (kind === 'scale') {
    const scale = get(d, 'scale', 'float', 'preprocessing');
    check(scale > 0, 'preprocessing.scale must be positive');
    return { kind, scale };
  }
  if (kind === 'standardize') {
    const std = numbers(d, 'std', nFeatures);
    check(std.every((s) => s > 0), 'preprocessing.std must be positive');
    return { kind, mean: numbers(d, 'mean', nFeatures), std };
  }
  throw new BundleError(`invalid manifest: unknown preprocessing kind '${kind}'`);
}

function graph(d, name) {
  const file = get(d, 'file', 'str', name);
  check(file.endsWith('.onnx') && !file.includes('/') && !file.includes('\\') && file[0] !== '.',
    `${name}.file must be a plain .onnx file name inside the bundle`);
  const sha256 = get(d, 'sha256', 'str', name);
  check(/^[0-9a-f]{64}$/.test(sha256), `${name}.sha256 is not a sha256 hex digest`);
  const inputs = get(d, 'inputs', 'list', name);
  const outputs = get(d, 'outputs', 'list', name);
  check([...inputs, ...outputs].every((s) => typeof s === 'string'),
    `${name}.inputs and ${name}.outputs must be lists of names`);
  return { file, sha256, inputs, outputs };
}

function series(d, shape) {
  if (d === null || d === undefined) return null;
  check(typeof d === 'object' && !Array.isArray(d), 'series must be an object or null');
  const window = get(d, 'window', 'int', 'series');
  const stride = get(d, 'stride', 'int', 'series');
  const channels = get(d, 'channels', 'list', 'series');
  check(window > 0 && stride > 0, 'series.window and series.stride must be positive');
  check(channels.length > 0 && channels.every((c) => typeof c === 'string'),
    'series.channels must be a list of names');
  check(shape.length === 2 && shape[0] === window && shape[1] === channels.length,
    `input_shape must be [window, channels] = [${window}, ${channels.length}] for a series`);
  const timestamp = d.timestamp ?? null;
  const step = d.step_seconds ?? null;
  check(timestamp === null || typeof timestamp === 'string', 'series.timestamp: a name or null');
  check(step === null || (isInt(step) && step > 0), 'series.step_seconds: positive or null');
  const alarm = d.alarm_threshold ?? ALARM_THRESHOLD;
  check(isNumber(alarm) && alarm >= 0 && alarm <= 1,
    'series.alarm_threshold must be a number in [0, 1]');
  const low = d.low ?? null;
  const high = d.high ?? null;
  check((low === null) === (high === null), 'series.low and series.high: both or neither');
  if (low !== null) {
    for (const [key, v] of [['low', low], ['high', high]]) {
      check(Array.isArray(v) && v.length === channels.length && v.every(Number.isFinite),
        `series.${key} must be a list of ${channels.length} finite numbers`);
    }
    check(low.every((v, c) => v <= high[c]), 'series.low must not be above series.high');
  }
  return { window, stride, channels, timestamp, stepSeconds: step, alarmThreshold: alarm, low, high };
}

function defaultScore(d, latentDim) {
  check(d !== null && typeof d === 'object' && !Array.isArray(d), 'default_score must be an object');
  const scoreType = d.score_type ?? 'elbo';
  const samples = d.samples ?? 0;
  check(SCORE_TYPES.includes(scoreType), `unknown default_score.score_type '${scoreType}'`);
  check(isInt(samples) && samples >= 0, 'default_score.samples must be an integer >= 0');
  check(scoreType !== 'iwae' || samples >= 1, 'default_score: iwae needs samples >= 1');
  const complexity = d.complexity ?? false;
  check(typeof complexity === 'boolean', 'default_score.complexity must be true or false');
  const eps = d.eps ?? null;
  check(eps === null || (Array.isArray(eps) && eps.length === samples && samples > 0
      && eps.every((row) => Array.isArray(row) && row.length === latentDim && row.every(isNumber))),
    `default_score.eps must be null or ${samples} lists of ${latentDim} finite numbers`);
  return { scoreType, samples, complexity, eps };
}

function threshold(d) {
  if (d === null || d === undefined) return null;
  check(typeof d === 'object' && !Array.isArray(d), 'threshold must be an object or null');
  const value = get(d, 'value', 'float', 'threshold');
  const samples = d.samples ?? 0;
  const seed = d.seed ?? 0;
  for (const [name, v] of [['samples', samples], ['seed', seed], ['count', d.count ?? 0]]) {
    check(isInt(v) && v >= 0, `threshold.${name} must be an integer >= 0`);
  }
  const scoreType = d.score_type ?? 'elbo';
  check(SCORE_TYPES.includes(scoreType), `unknown threshold.score_type '${scoreType}'`);
  const complexity = d.complexity ?? false;
  check(typeof complexity === 'boolean', 'threshold.complexity must be true or false');
  return { value, scoreType, samples, seed, complexity };
}

/** A parsed vae.json -> the fields this runtime uses; BundleError("invalid manifest: ...") */
export function parseManifest(d) {
  check(d !== null && typeof d === 'object' && !Array.isArray(d), 'the manifest is not a JSON object');
  const version = get(d, 'format_version', 'int');
  check(version === FORMAT_VERSION,
    `format_version ${version} is not supported (this runtime reads ${FORMAT_VERSION}`
    + (version === 1 ? '; add the score graphs with `vae-edge upgrade BUNDLE`)' : ')'));
  const likelihood = get(d, 'likelihood', 'str');
  check(likelihood in LIKELIHOODS, `unknown likelihood '${likelihood}'`);
  check((d.decoder_output ?? LIKELIHOODS[likelihood]) === LIKELIHOODS[likelihood],
    `decoder_output must be '${LIKELIHOODS[likelihood]}' for a ${likelihood} likelihood`);
  check(get(d, 'input_dtype', 'str') === 'float32', "input_dtype must be 'float32'");
  const shape = get(d, 'input_shape', 'list');
  check(shape.length >= 1 && shape.every((n) => isInt(n) && n > 0),
    'input_shape must be a list of positive integers');
  const latentDim = get(d, 'latent_dim', 'int');
  check(latentDim > 0, 'latent_dim must be positive');
  const spec = series(d.series, shape);
  const nFeatures = shape.reduce((a, b) => a * b, 1);
  const graphs = d.score_graphs ?? null;
  check(graphs !== null, 'score_graphs is missing (this runtime needs the score graphs)');
  check(typeof graphs === 'object' && 'prepare' in graphs && 'loss' in graphs
    && Object.keys(graphs).length === 2, 'score_graphs must be null or an object with prepare and loss');
  const manifest = {
    formatVersion: version,
    inputShape: shape,
    nFeatures,
    likelihood,
    latentDim,
    preprocessing: preprocessing(get(d, 'preprocessing', 'dict'), spec ? shape.at(-1) : nFeatures),
    encoder: graph(get(d, 'encoder', 'dict'), 'encoder'),
    decoder: graph(get(d, 'decoder', 'dict'), 'decoder'),
    prepare: graph(get(graphs, 'prepare', 'dict', 'score_graphs'), 'prepare'),
    loss: graph(get(graphs, 'loss', 'dict', 'score_graphs'), 'loss'),
    defaultScore: defaultScore(d.default_score ?? {}, latentDim),
    threshold: threshold(d.threshold),
    binary: d.binary ?? false,
    series: spec,
    dataDtype: get(d, 'data_dtype', 'str'),
  };
  check(typeof manifest.binary === 'boolean', 'binary must be true or false');
  check(likelihood !== 'bernoulli' || manifest.preprocessing.kind === 'scale',
    "a bernoulli likelihood needs 'scale' preprocessing");
  check(manifest.defaultScore.samples === 0 || manifest.defaultScore.eps !== null,
    'default_score.eps is missing: the draws of the default score need it');
  check(manifest.encoder.file !== manifest.decoder.file, 'encoder and decoder must be different files');
  manifest.greyLevels = likelihood === 'bernoulli'
    && Math.abs(manifest.preprocessing.scale - 1 / 255) <= 1e-9 * (1 / 255);
  return manifest;
}

/** vae.json's text -> manifest; `where` names the bundle in messages. */
export function readManifest(text, where) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new BundleError(`${where}: not valid JSON (${e.message})`);
  }
  try {
    return parseManifest(data);
  } catch (e) {
    if (e instanceof BundleError) throw new BundleError(`${where}: ${e.message}`);
    throw e;
  }
}
