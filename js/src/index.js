// vae-edge in JavaScript: a bundle's scores, samples and streams with onnxruntime-node in
// Node and onnxruntime-web (wasm) in a browser. See docs/javascript.md.
export { loadBundle, Bundle } from './bundle.js';
export { Stream, AnomalyLikelihood, parseTimestamp } from './stream.js';
export { VAEEdgeError, InputError, BundleError, FORMAT_VERSION } from './manifest.js';
export { useOrt } from './ort.js';
