// Seeded standard normal draws for sample(): xoshiro128** seeded by splitmix32, turned
// into normals by Box-Muller. Any seed gives the same draws on every JavaScript engine;
// they are not NumPy's (PCG64 and a ziggurat), so Python's samples for a seed differ.

function splitmix32(state) {
  return () => {
    state = (state + 0x9e3779b9) | 0;
    let t = state ^ (state >>> 16);
    t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
}

/** A generator of uniform numbers in [0, 1) (53 bits from two 32-bit outputs). */
export function uniform(seed) {
  const init = splitmix32(seed >>> 0);
  let a = init();
  let b = init();
  let c = init();
  let d = init();
  const next = () => {
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return result;
  };
  return () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992;
}

function rotl(x, k) {
  return (x << k) | (x >>> (32 - k));
}

/** n standard normal draws (Float32Array) from `seed`. */
export function normalDraws(seed, n) {
  const u = uniform(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u())); // 1 - u in (0, 1]: never log(0)
    const theta = 2 * Math.PI * u();
    out[i] = r * Math.cos(theta);
    if (i + 1 < n) out[i + 1] = r * Math.sin(theta);
  }
  return out;
}
