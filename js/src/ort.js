// The one module that knows where it runs: onnxruntime-node and the file system in Node,
// onnxruntime-web (wasm, one thread) and fetch in a browser. Nothing else imports either.

let ortPromise = null;
let executionProvider = null;

export const inNode = typeof process !== 'undefined' && Boolean(process.versions?.node);

/** The onnxruntime module: onnxruntime-node in Node, onnxruntime-web in a browser. */
export function getOrt() {
  executionProvider ??= inNode ? 'cpu' : 'wasm';
  const name = inNode ? 'onnxruntime-node' : 'onnxruntime-web';
  ortPromise ??= (inNode ? import('onnxruntime-node') : import('onnxruntime-web')).then(
    (ort) => {
      if (!inNode) ort.env.wasm.numThreads = 1; // one thread: no cross-origin isolation needed
      return ort;
    },
    (e) => {
      ortPromise = null;
      throw new Error(`${name} could not be loaded (${String(e.message).split('\n')[0]}): `
        + `npm install --ignore-scripts ${name}`);
    },
  );
  return ortPromise;
}

/** Use another onnxruntime module and execution provider (e.g. onnxruntime-web in Node:
 * useOrt(ortWeb, 'wasm')); bundles loaded afterwards use it. */
export function useOrt(ort, executionProviderName = 'cpu') {
  ortPromise = Promise.resolve(ort);
  executionProvider = executionProviderName;
}

/** The execution provider the sessions are made with. */
export function provider() {
  return executionProvider;
}

/** The bytes of a file: a path in Node, a URL (http, https, file, or relative) in a browser. */
export async function readBytes(location) {
  if (inNode && !/^https?:\/\//.test(location)) {
    const { readFile } = await import('node:fs/promises');
    const path = location.startsWith('file:') ? new URL(location) : location;
    return new Uint8Array(await readFile(path));
  }
  const response = await fetch(location);
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** A file beside `base` (a bundle folder, as a path or a URL). */
export function join(base, name) {
  return base.endsWith('/') ? base + name : `${base}/${name}`;
}

export async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}
