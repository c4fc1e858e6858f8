// Types of the vae-edge JavaScript runtime (for editors; the package is plain ES modules).

/** Raw samples as Python's `EdgeVAE.score` takes them: values in the data's units, row-major. */
export interface Samples {
  data: Float32Array | Float64Array | Uint8Array | number[];
  /** (N, ...inputShape), one sample's inputShape, or (N, nFeatures); a windowed model's
   * series: (T,) or (T, C), scored reading by reading as a stream. */
  shape: number[];
}

export interface Tensorish {
  data: Float32Array;
  shape: number[];
}

export interface Reading {
  /** The reading's position in the stream, from 0. */
  index: number;
  /** The timestamp as given (null when none). */
  timestamp: string | number | Date | null;
  /** The score of the window ending at this reading (nats). */
  score: number;
  /** How unusual the reading is against the stream's own recent readings, in [0, 1]. */
  likelihood: number;
  /** likelihood above the alarm threshold, at most once in a window, not while one is held. */
  isAnomaly: boolean;
  /** An alarm held: from an alarm until half a window of calm readings, or until four
   * windows have passed and the new level is learnt (docs/stream-spec.md). */
  inAlarm: boolean;
  /** Each channel's loss over the window (streams made with perFeature). */
  features?: Float32Array;
}

export interface StreamReport {
  readings: number;
  alarms: number;
  outOfOrder: number;
  putBack: number;
  missing: number;
  unreadable: number;
}

export class Stream {
  readonly window: number;
  readonly channels: number;
  readonly threshold: number;
  readonly report: StreamReport;
  /** One reading: one number per channel (NaN, null or undefined when missing; a number
   * for one channel) and its timestamp as the CSV gives it ("2026-03-01 00:05:00", seconds
   * since the epoch, a Date; null when unreadable; left out when the stream has none). */
  push(values: ArrayLike<number | null | undefined> | number | null, timestamp?: string | number | Date | null): Promise<Reading>;
  /** One CSV line: null for the header and blank lines. Never refused. */
  pushLine(line: string): Promise<Reading | null>;
}

export interface Manifest {
  formatVersion: number;
  inputShape: number[];
  nFeatures: number;
  likelihood: 'bernoulli' | 'gaussian';
  latentDim: number;
  defaultScore: { scoreType: 'recon' | 'elbo' | 'iwae'; samples: number; complexity: boolean; eps: number[][] | null };
  threshold: { value: number; scoreType: string; samples: number; seed: number; complexity: boolean } | null;
  series: { window: number; stride: number; channels: string[]; timestamp: string | null; stepSeconds: number | null; alarmThreshold: number } | null;
}

export class Bundle {
  readonly manifest: Manifest;
  readonly source: string;
  readonly inputShape: number[];
  /** The threshold stored in the manifest, or null. */
  readonly threshold: number | null;
  /** The model's default score per sample (Python's `score`); higher = more anomalous. */
  score(input: Samples): Promise<Float32Array>;
  /** Each feature's loss: (N, ...inputShape); a series: (T, C). */
  featureScores(input: Samples): Promise<Tensorish>;
  /** score > threshold (the stored one unless given), 1 or 0 per sample; a series: alarms. */
  predict(input: Samples, options?: { threshold?: number }): Promise<Uint8Array>;
  /** n samples in the data's units, from a seeded JavaScript generator (not NumPy's draws). */
  sample(n: number, options?: { seed?: number }): Promise<Tensorish>;
  /** A windowed model's stream of readings. */
  /** adapt: false for a frozen model (the level as read). */
  stream(options?: { threshold?: number; adapt?: boolean }): Stream;
}

/** Load and check a bundle folder: a path in Node, a URL in a browser. */
export function loadBundle(pathOrUrl: string): Promise<Bundle>;

/** Use another onnxruntime module: useOrt(await import('onnxruntime-web'), 'wasm'). */
export function useOrt(ort: unknown, executionProvider?: string): void;

/** A timestamp as the stream reads it: seconds since the epoch (UTC), or null. */
export function parseTimestamp(cell: string | number | Date | null | undefined): number | null;

export class AnomalyLikelihood {
  constructor(quiet?: number);
  update(loss: number): number;
}

export const FORMAT_VERSION: number;
export class VAEEdgeError extends Error {}
export class InputError extends VAEEdgeError {}
export class BundleError extends VAEEdgeError {}
