// A windowed model on a stream of readings, ported from runtime/series.py (SeriesStream,
// SeriesReader, the step rule) and runtime/alarm.py (AnomalyLikelihood). The rules are
// written down in docs/stream-spec.md; the golden vectors (js/test/golden) hold this port to
// Python's numbers.

import { InputError } from './manifest.js';

// alarm.py's constants: a port must use these values.
export const HISTORY = 8640;
export const LEARNING = 288;
export const TAIL_LEVEL = 0.98;
export const REFIT = 50;
export const MIN_EXCESSES = 5;
export const TAIL_ROOT = 10;
export const BOUNDED = true;
// series.py's StreamRules defaults.
export const SPATIAL_MARGIN = 0.05;
export const LEVEL_RATE = 0;
export const CALM = 0.5;
export const ACCEPT = 4.0;
const FLOAT32_MAX = 3.4028234663852886e38;
const TIMESTAMP_NAMES = ['timestamp', 'time', 'datetime', 'date'];
const MISSING_CELLS = ['', 'nan', 'na', 'null', 'none'];

/** The likelihood of an upper tail probability. */
export function likelihoodOfTail(tail) {
  return 1 - Math.max(tail, 0) ** (1 / TAIL_ROOT);
}

/** update(loss) -> the likelihood in [0, 1] of each reading's loss, in order (alarm.py). */
export class AnomalyLikelihood {
  constructor(quiet = 1, { history = HISTORY, learning = LEARNING, level = TAIL_LEVEL, refit = REFIT,
    bounded = BOUNDED } = {}) {
    Object.assign(this, { quiet, history, learning, level, refit, bounded });
    this.ring = new Float64Array(history);
    this.count = 0; // losses learnt
    this.readings = 0; // losses judged, learnt or not
    this.raw = 0; // the last reading's tail likelihood, before the gate
    this.sorted = null;
    this.fittedAt = -1;
    this.tail = [0, 0, 1, 0]; // threshold, shape, scale, share above
    this.recent = []; // [index, tail likelihood], decreasing: the last `quiet`
  }

  /** atLeast: a floor once the likelihood speaks (the spatial check); learn: false keeps
   * the loss out of the history (a held alarm's readings). */
  update(loss, atLeast = 0, learn = true) {
    const x = Math.log1p(Math.max(Number(loss), 0));
    const n = Math.min(this.count, this.history);
    let raw = 0;
    if (n >= this.learning) {
      const due = this.count % this.refit === 0 && this.fittedAt !== this.count;
      if (this.sorted === null || due) this.fit(n);
      raw = Math.max(likelihoodOfTail(this.tailProbability(x)), atLeast);
    }
    this.raw = raw;
    if (learn) {
      this.ring[this.count % this.history] = x;
      this.count += 1;
    }
    const i = this.readings;
    this.readings += 1;
    const recent = this.recent;
    while (recent.length && recent[0][0] <= i - this.quiet - 1) recent.shift();
    const novel = !recent.length || raw > recent[0][1];
    while (recent.length && recent.at(-1)[1] <= raw) recent.pop();
    recent.push([i, raw]);
    return novel ? raw : 0;
  }

  /** The generalised Pareto tail above the history's `level` quantile, by moments. */
  fit(n) {
    const history = this.ring.slice(0, n).sort();
    const threshold = history[Math.trunc(this.level * n)];
    const excesses = [];
    for (const v of history) if (v > threshold) excesses.push(v - threshold);
    const share = excesses.length / n;
    let shape = 0;
    let scale = 1e-3;
    if (excesses.length) {
      const m = excesses.reduce((a, b) => a + b, 0) / excesses.length;
      if (excesses.length >= MIN_EXCESSES) {
        const v = excesses.reduce((a, b) => a + (b - m) ** 2, 0) / excesses.length;
        if (v > 0) {
          shape = 0.5 * (1 - (m * m) / v);
          scale = 0.5 * m * ((m * m) / v + 1);
        }
        if (v <= 0 || (!this.bounded && shape < 0)) {
          shape = 0; // exponential: the mean excess, never a tail that ends
          scale = Math.max(m, 1e-3);
        }
      } else {
        scale = Math.max(m, scale);
      }
    }
    this.sorted = history;
    this.fittedAt = this.count;
    this.tail = [threshold, shape, scale, share];
  }

  tailProbability(x) {
    const [threshold, shape, scale, share] = this.tail;
    if (x <= threshold) {
      const s = this.sorted;
      let lo = 0;
      let hi = s.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (s[mid] < x) lo = mid + 1;
        else hi = mid;
      }
      return (s.length - lo) / s.length;
    }
    const y = (x - threshold) / scale;
    if (Math.abs(shape) < 1e-9) return share * Math.exp(-y);
    const base = 1 + shape * y;
    return base > 0 ? share * base ** (-1 / shape) : 0;
  }
}

// -- timestamps and CSV cells (series.py's _timestamp, _date_time, _cells) ----------------

const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$|^[+-]?(nan|inf|infinity)$/i;
const DATE_TIME = /^(\d{4})(?:-(\d{2})(?:-(\d{2})(?: (\d{2})(?::(\d{2})(?::(\d{2})(?:\.\d*)?)?)?)?)?)?(?:([+-])(\d{2}):?(\d{2}))?$/;

export function isNumber(cell) {
  return NUMBER.test(cell.trim());
}

/** A cell as Python's float() reads it (nan, inf and infinity too), or null. */
function parseNumber(cell) {
  const text = cell.trim();
  return isNumber(text) ? Number(text.replace(/inf(inity)?$/i, 'Infinity')) : null;
}

/** A timestamp cell -> seconds since the epoch (UTC), or null when it is not one: seconds
 * since the epoch as a number, or ISO 8601 (`2014-04-10 07:15:00`, `2014-04-10T07:15:00Z`,
 * fewer fields, fractions of a second dropped, an offset taken to UTC), as NumPy reads it. */
export function parseTimestamp(cell) {
  if (cell === null || cell === undefined) return null;
  if (typeof cell === 'number') return Number.isFinite(cell) ? Math.trunc(cell) : null;
  if (cell instanceof Date) return Number.isNaN(cell.getTime()) ? null : Math.floor(cell.getTime() / 1000);
  const text = String(cell).trim();
  const v = parseNumber(text);
  if (v !== null) return Number.isFinite(v) ? Math.trunc(v) : null;
  const m = DATE_TIME.exec(text.replaceAll('T', ' ').replace(/Z+$/, ''));
  if (!m) return null;
  const [year, month = 1, day = 1, hour = 0, minute = 0, second = 0] = m.slice(1, 7).map((v) => (v === undefined ? undefined : Number(v)));
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  date.setUTCHours(hour, minute, second);
  if (month < 1 || month > 12 || date.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59) return null;
  let seconds = Math.floor(date.getTime() / 1000);
  if (m[7]) seconds -= (m[7] === '-' ? -1 : 1) * (Number(m[8]) * 3600 + Number(m[9]) * 60);
  return seconds;
}

/** The cells of one CSV line, double quotes respected (Python's csv module). */
export function cells(line, delimiter = ',') {
  line = line.replace(/\r?\n$/, '');
  const out = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cell += ch;
    } else if (ch === '"' && cell === '') quoted = true;
    else if (ch === delimiter) {
      out.push(cell);
      cell = '';
    } else cell += ch;
  }
  out.push(cell);
  return line === '' ? [] : out;
}

function sniffDelimiter(line) {
  let best = ',';
  for (const d of [',', ';', '\t']) if (cells(line, d).length > cells(line, best).length) best = d;
  return best;
}

const isMissing = (cell) => MISSING_CELLS.includes(cell.trim().toLowerCase());

/** Which columns of a stream's CSV are values and which the timestamp (SeriesReader.for_header). */
function readerFor(firstLine, spec, where) {
  const delimiter = sniffDelimiter(firstLine);
  const first = cells(firstLine, delimiter);
  const header = !first.every((c) => isNumber(c) || parseTimestamp(c) !== null || isMissing(c));
  const names = header ? first.map((c) => c.trim()) : first.map((_, i) => String(i));
  const columns = spec.channels.every((c) => names.includes(c)) ? spec.channels : null;
  let t = spec.timestamp !== null && names.includes(spec.timestamp) ? names.indexOf(spec.timestamp) : null;
  if (t === null) {
    const lowered = names.map((n) => n.toLowerCase());
    const found = TIMESTAMP_NAMES.find((n) => lowered.includes(n));
    if (found !== undefined) t = lowered.indexOf(found);
    else if (!header && !isNumber(first[0])) t = 0;
  }
  const values = columns ? columns.map((c) => names.indexOf(c)) : names.map((_, i) => i).filter((i) => i !== t);
  if (!values.length) throw new InputError(`${where}: no value columns (only a timestamp)`);
  if (values.length !== spec.channels.length) {
    throw new InputError(`${where}: ${values.length} value column(s) (${values.map((i) => names[i]).join(', ')}); `
      + `the model reads ${spec.channels.length}: ${spec.channels.join(', ')} (choose with --columns)`);
  }
  return { delimiter, header, values, timestamp: t, width: Math.max(...values, t ?? 0) + 1 };
}

// -- the stream ----------------------------------------------------------------------------

/** Steps from a reading at `before` to the next at `t` (seconds): the time between them
 * rounded half to even to whole steps, at least 1 (series.steps_between). */
export function stepsBetween(before, t, stepSeconds) {
  return Math.max(1, roundHalfEven(Math.trunc(t - before) / stepSeconds));
}

function roundHalfEven(v) {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Each reading gets, at once, from it and the readings before it only: the score of the
 * window of the last W steps ending at it, its likelihood and whether it alarms
 * (SeriesStream). `await stream.push(values, timestamp)`; calls are taken in order.
 */
export class Stream {
  constructor(bundle, { threshold, perFeature = false, where = 'the stream', adapt = true } = {}) {
    const spec = bundle.manifest.series;
    this.bundle = bundle;
    this.window = spec.window;
    this.channels = spec.channels.length;
    this.stepSeconds = spec.stepSeconds;
    if (threshold !== undefined && threshold !== null && !Number.isFinite(Number(threshold))) {
      throw new InputError(`threshold must be a number, got ${threshold}`);
    }
    this.threshold = threshold ?? spec.alarmThreshold;
    this.perFeature = perFeature;
    this.where = where;
    this.likelihood = new AnomalyLikelihood(this.window);
    this.report = { readings: 0, alarms: 0, outOfOrder: 0, putBack: 0, missing: 0, unreadable: 0 };
    this.ring = new Float64Array(2 * this.window * this.channels).fill(NaN);
    this.end = this.window; // steps [end - W, end) are the window
    this.lastTime = null;
    this.sinceAlarm = this.window;
    this.reader = null;
    this.queue = Promise.resolve();
    // What the stream learns (series.py's StreamRules, defaults): the range seen, the
    // level of its normal readings and the shift shown the model; a held alarm.
    this.adapt = adapt;
    const C = this.channels;
    const seen = spec.low !== null && spec.high !== null;
    this.low = seen ? Float64Array.from(spec.low) : new Float64Array(C).fill(Infinity);
    this.high = seen ? Float64Array.from(spec.high) : new Float64Array(C).fill(-Infinity);
    const mean = bundle.manifest.preprocessing.mean;
    this.trainedLevel = mean ? Float64Array.from(mean) : new Float64Array(C);
    this.level = Float64Array.from(this.trainedLevel);
    this.shift = new Float64Array(C);
    this.normalSum = new Float64Array(C);
    this.normalCount = new Float64Array(C);
    this.heldFor = null;
    this.calm = 0;
    this.rebase = false;
  }

  /**
   * One reading: values, one number per channel (NaN, null or undefined when missing; a
   * number for one channel); timestamp as the CSV gives it (a string, seconds since the
   * epoch, a Date; null when unreadable; left out when the stream has no timestamps).
   * Resolves to {index, timestamp, score, likelihood, isAnomaly}.
   */
  push(values, timestamp) {
    const x = this.reading(values);
    const hasTime = arguments.length > 1 && timestamp !== undefined;
    let stamp = null;
    if (hasTime) {
      stamp = parseTimestamp(timestamp);
      if (stamp === null && timestamp !== null) this.report.unreadable += 1;
    }
    return this.enqueue(() => this.step(x, hasTime, stamp, timestamp));
  }

  /** One line of CSV: the header or a blank line (resolves to null), or a reading, never
   * refused (a cell that is not a number is missing, an unreadable timestamp none). */
  pushLine(line) {
    if (!line.trim()) return Promise.resolve(null);
    if (this.reader === null) {
      this.reader = readerFor(line, this.bundle.manifest.series, this.where);
      if (this.reader.header) return Promise.resolve(null);
    }
    const r = this.reader;
    const c = cells(line, r.delimiter);
    let readable = c.length >= r.width;
    const x = new Float64Array(this.channels).fill(NaN);
    r.values.forEach((i, j) => {
      if (i >= c.length) return;
      const cell = c[i].trim();
      if (isMissing(cell)) return;
      const v = parseNumber(cell); // not a number, or infinite: missing, the line unreadable
      if (v === null || v === Infinity || v === -Infinity) readable = false;
      else x[j] = v;
    });
    let given = null;
    let stamp = null;
    if (r.timestamp !== null && r.timestamp < c.length) {
      given = c[r.timestamp].trim();
      stamp = parseTimestamp(given);
      if (stamp === null) readable = false;
    }
    this.report.unreadable += readable ? 0 : 1;
    return this.enqueue(() => this.step(x, r.timestamp !== null, stamp, given));
  }

  enqueue(job) {
    const result = this.queue.then(job);
    this.queue = result.catch(() => {});
    return result;
  }

  reading(values) {
    const raw = typeof values === 'number' || values === null ? [values] : Array.from(values ?? []);
    if (raw.length !== this.channels) {
      throw new InputError(`readings have shape (${raw.length},); this model takes ${this.channels} channel(s) per step`);
    }
    const x = Float64Array.from(raw, (v) => (v === null || v === undefined ? NaN : Number(v)));
    const c = x.findIndex((v) => v === Infinity || v === -Infinity);
    if (c >= 0) throw new InputError(`the reading ${this.report.readings}, channel ${c}, is infinite`);
    return x;
  }

  async step(x, hasTime, stamp, given) {
    const w = this.window;
    const C = this.channels;
    const gap = hasTime ? this.stepsTo(stamp) - 1 : 0;
    if (gap) {
      this.report.putBack += gap;
      for (let i = 0; i < Math.min(gap, w); i++) this.advance(null);
    }
    this.advance(x);
    const index = this.report.readings;
    this.report.readings += 1;
    if (x.some(Number.isNaN)) this.report.missing += 1;
    const steps = this.ring.subarray((this.end - w) * C, this.end * C);
    const window = Float32Array.from(steps, (v, k) => v - this.shift[k % C]);
    const out = await this.bundle.runBatch(window, 1, Infinity, index);
    const beyond = this.beyond(x);
    const held = this.heldFor !== null;
    let likelihood = 0;
    if (index >= w - 1) likelihood = this.likelihood.update(out.newest.data[0], beyond ? 1 : 0, !held);
    const isAnomaly = likelihood > this.threshold && this.sinceAlarm >= w && !held;
    this.sinceAlarm = isAnomaly ? 0 : this.sinceAlarm + 1;
    this.report.alarms += isAnomaly ? 1 : 0;
    if (isAnomaly && CALM > 0) {
      this.heldFor = 0;
      this.calm = 0;
    } else if (held) {
      this.heldFor += 1;
      this.calm = this.likelihood.raw <= this.threshold ? this.calm + 1 : 0;
      if (this.calm >= CALM * w) this.heldFor = null;
      else if (this.heldFor >= ACCEPT * w) { // a new normal: held until re-based
        this.rebase = this.adapt;
        if (!this.adapt) this.heldFor = null;
      }
    }
    const inAlarm = this.heldFor !== null; // a re-base at this window's end ends it after it
    if (this.adapt) this.learnLevel(x, !(held || isAnomaly), (index + 1) % w === 0);
    const result = {
      index, timestamp: given ?? null, score: out.score.data[0], likelihood, isAnomaly, inAlarm,
    };
    if (this.perFeature) {
      const features = new Float32Array(C);
      for (let c = 0; c < C; c++) {
        let sum = 0;
        for (let s = 0; s < w; s++) sum += out.features.data[s * C + c];
        features[c] = Math.min(sum, FLOAT32_MAX);
      }
      result.features = features;
    }
    return result;
  }

  /** Whether x lies beyond the range of the readings before it by more than the spatial
   * margin in any channel; the range then takes it in. */
  beyond(x) {
    let out = false;
    for (let c = 0; c < this.channels; c++) {
      const v = x[c];
      const margin = SPATIAL_MARGIN * (this.high[c] - this.low[c]);
      if (margin > 0 && (v < this.low[c] - margin || v > this.high[c] + margin)) out = true;
      if (v < this.low[c]) this.low[c] = v; // NaN compares false: a missing reading changes nothing
      if (v > this.high[c]) this.high[c] = v;
    }
    return out;
  }

  /** A normal reading taken in; at a window's end the level re-based on the window (an
   * accepted alarm) or moved LEVEL_RATE towards its normal readings' mean. */
  learnLevel(x, normal, windowEnd) {
    const C = this.channels;
    if (normal && LEVEL_RATE) { // sums only a moving level uses
      for (let c = 0; c < C; c++) {
        if (!Number.isNaN(x[c])) {
          this.normalSum[c] += x[c];
          this.normalCount[c] += 1;
        }
      }
    }
    if (!windowEnd) return;
    const w = this.window;
    if (this.rebase) {
      for (let c = 0; c < C; c++) {
        let total = 0;
        let present = 0;
        for (let s = this.end - w; s < this.end; s++) {
          const v = this.ring[s * C + c];
          total += Number.isNaN(v) ? 0 : v;
          present += Number.isNaN(v) ? 0 : 1;
        }
        if (present > 0) this.level[c] = total / present;
      }
      this.rebase = false;
      this.heldFor = null;
    } else if (LEVEL_RATE) {
      for (let c = 0; c < C; c++) {
        if (this.normalCount[c] >= w / 2) {
          const mean = this.normalSum[c] / this.normalCount[c];
          this.level[c] += LEVEL_RATE * (mean - this.level[c]);
        }
      }
    }
    this.normalSum.fill(0);
    this.normalCount.fill(0);
    for (let c = 0; c < C; c++) this.shift[c] = this.level[c] - this.trainedLevel[c];
  }

  /** Steps from the reading before to one at t (null: 1, the clock moving on a step). */
  stepsTo(t) {
    if (!this.stepSeconds) return 1;
    if (t === null) {
      if (this.lastTime !== null) this.lastTime += this.stepSeconds;
      return 1;
    }
    const last = this.lastTime;
    if (last === null) {
      this.lastTime = t;
      return 1;
    }
    this.lastTime = Math.max(last, t); // an earlier timestamp does not set the clock back
    if (t <= last) this.report.outOfOrder += 1;
    return stepsBetween(last, t, this.stepSeconds);
  }

  advance(x) {
    const w = this.window;
    const C = this.channels;
    if (this.end === 2 * w) {
      this.ring.copyWithin(0, (this.end - w + 1) * C, this.end * C);
      this.end = w - 1;
    }
    if (x === null) this.ring.fill(NaN, this.end * C, (this.end + 1) * C);
    else this.ring.set(x, this.end * C);
    this.end += 1;
  }
}
