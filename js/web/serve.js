// `make web`: the page and what it loads, as static files on 127.0.0.1 only. Nothing the
// page scores leaves the browser: the server never receives data, it only hands out files.
//   node web/serve.js [port]        (default 8000; 0 picks a free one)
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const js = join(dirname(fileURLToPath(import.meta.url)), '..');
// URL prefix -> folder; the longest prefix wins
const MOUNTS = [
  ['/models/mnist/', join(js, '..', 'runtime', 'default_model')],
  ['/models/sensor/', join(js, 'test', 'golden', 'series_model')],
  ['/models/table/', join(js, 'test', 'golden', 'table_model')],
  ['/golden/', join(js, 'test', 'golden')],
  ['/node_modules/onnxruntime-web/dist/', join(js, 'node_modules', 'onnxruntime-web', 'dist')],
  ['/src/', join(js, 'src')],
  ['/bench/', join(js, 'bench')],
  ['/test/', join(js, 'test')],
  ['/', join(js, 'web')],
];
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.onnx': 'application/octet-stream',
  '.csv': 'text/csv; charset=utf-8',
  '.png': 'image/png',
  '.css': 'text/css; charset=utf-8',
};

function fileFor(urlPath) {
  const path = decodeURIComponent(urlPath.split('?')[0]);
  const [prefix, folder] = MOUNTS.find(([p]) => path.startsWith(p));
  const rest = normalize(path.slice(prefix.length) || 'index.html');
  if (rest.startsWith('..') || rest.includes(`${sep}..`)) return null;
  return join(folder, rest === '.' ? 'index.html' : rest);
}

/** Starts the server; resolves to it once it listens (server.address().port). */
export function startServer(port = 8000) {
  const server = createServer(async (request, response) => {
    const file = request.method === 'GET' ? fileFor(request.url) : null;
    try {
      if (!file) throw new Error('refused');
      const body = await readFile(file);
      response.writeHead(200, {
        'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
        // cross-origin isolation: performance.now() to 5 us instead of 100 us
        'Cross-Origin-Opener-Policy': 'same-origin',
        'Cross-Origin-Embedder-Policy': 'require-corp',
      });
      response.end(body);
    } catch {
      response.writeHead(404, { 'Content-Type': 'text/plain' });
      response.end('not found\n');
    }
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const server = await startServer(Number(process.argv[2] ?? process.env.PORT ?? 8000));
  console.log(`vae-edge page: http://127.0.0.1:${server.address().port}/  (Ctrl-C stops it)`);
}
