// The page: digits sampled from the shipped model, a digit drawn (or dropped) scored as it
// is drawn, and a sensor's CSV played as a stream. Everything runs in this tab.
import { loadBundle } from '/src/index.js';
import { compareGolden, readGolden } from '/test/golden.js';

const $ = (id) => document.getElementById(id);
const state = { ready: false, firstScoreMs: null, drawn: null, sensor: null };
window.vaeEdge = { loadBundle, compareGolden, readGolden, state };

const sensorLoading = loadBundle('/models/sensor'); // not needed for the first score
const mnist = await loadBundle('/models/mnist');

// -- digits ---------------------------------------------------------------------------------

function paintGrey(canvas, data, side, x0 = 0, y0 = 0) {
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(side, side);
  for (let i = 0; i < side * side; i++) {
    const v = Math.max(0, Math.min(255, data[i]));
    image.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(image, x0, y0);
}

async function sampleGrid() {
  const seed = Math.max(0, Math.trunc(Number($('seed').value) || 0));
  const { data } = await mnist.sample(64, { seed });
  for (let k = 0; k < 64; k++) {
    paintGrey($('samples'), data.subarray(k * 784, (k + 1) * 784), 28, (k % 8) * 28, Math.floor(k / 8) * 28);
  }
  return data;
}

// The alarm for a drawn digit: above the 99th percentile of the scores of 512 digits the
// model samples itself (the shipped model carries no threshold of its own); set at start.
let alarmAt = Infinity;

async function ownThreshold() {
  const own = (await mnist.sample(512, { seed: 1 })).data.map(Math.round);
  const scores = Array.from(await mnist.score({ data: own, shape: [512, 28, 28] })).sort((a, b) => a - b);
  alarmAt = scores[Math.floor(0.99 * scores.length)];
  $('threshold').textContent = `alarm above ${alarmAt.toPrecision(4)}: 99% of 512 digits sampled from the model score below`;
}

// -- drawing ---------------------------------------------------------------------------------

const draw = $('draw');
const pen = draw.getContext('2d', { willReadFrequently: true });
const small = Object.assign(document.createElement('canvas'), { width: 28, height: 28 });
const smallCtx = small.getContext('2d', { willReadFrequently: true });

function clearDrawing() {
  pen.fillStyle = '#000';
  pen.fillRect(0, 0, draw.width, draw.height);
}

/** The drawing as 28 x 28 grey levels 0..255, as MNIST holds digits (white on black). */
function drawnDigit() {
  smallCtx.drawImage(draw, 0, 0, 28, 28);
  const rgba = smallCtx.getImageData(0, 0, 28, 28).data;
  const x = new Float32Array(784);
  for (let i = 0; i < 784; i++) x[i] = Math.round((rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3);
  return x;
}

let scoring = null;
let again = false;
async function scoreDrawing() {
  if (scoring) {
    again = true;
    return scoring;
  }
  scoring = (async () => {
    do {
      again = false;
      const x = drawnDigit();
      const input = { data: x, shape: [1, 28, 28] };
      const [score] = await mnist.score(input);
      const features = await mnist.featureScores(input);
      const alarm = score > alarmAt;
      $('score').textContent = score.toPrecision(5);
      $('verdict').innerHTML = alarm ? '<span class="alarm">anomaly</span>: unlike the digits it learnt'
        : '<span class="ok">normal</span>: like the digits it learnt';
      paintHeat(features.data);
      state.drawn = { x: Array.from(x), score, alarm };
    } while (again);
  })();
  await scoring;
  scoring = null;
}

function paintHeat(losses) {
  const ctx = $('heat').getContext('2d');
  const image = ctx.createImageData(28, 28);
  const top = Math.max(...losses, 1e-6);
  for (let i = 0; i < 784; i++) {
    const t = Math.sqrt(Math.max(losses[i], 0) / top); // sqrt: small losses stay visible
    image.data.set([255 * Math.min(1, 2 * t), 255 * Math.max(0, 2 * t - 1), 64 * (1 - t), 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
}

let drawing = false;
function stroke(event) {
  const r = draw.getBoundingClientRect();
  pen.fillStyle = '#fff';
  pen.beginPath();
  pen.arc(event.clientX - r.left, event.clientY - r.top, 11, 0, 2 * Math.PI);
  pen.fill();
  scoreDrawing();
}
draw.addEventListener('pointerdown', (e) => { drawing = true; stroke(e); });
draw.addEventListener('pointermove', (e) => drawing && stroke(e));
window.addEventListener('pointerup', () => { drawing = false; });
$('clear').addEventListener('click', () => { clearDrawing(); scoreDrawing(); });

const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', async (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const file = e.dataTransfer.files[0];
  if (!file) return;
  const bitmap = await createImageBitmap(file);
  clearDrawing();
  pen.drawImage(bitmap, 0, 0, draw.width, draw.height);
  await scoreDrawing();
});

// -- the sensor ------------------------------------------------------------------------------

const chart = $('chart');

function paintChart(values, likelihood, alarms, held, threshold) {
  const ctx = chart.getContext('2d');
  const { width, height } = chart;
  ctx.clearRect(0, 0, width, height);
  const n = Math.max(values.length, 1);
  const x = (i) => 40 + ((width - 50) * i) / n;
  const top = { y: 10, h: 170 };
  const low = { y: 200, h: 90 };
  const finite = values.filter(Number.isFinite);
  const lo = Math.min(...finite);
  const hi = Math.max(...finite);
  ctx.fillStyle = 'rgba(221, 34, 34, 0.12)'; // an alarm held while the fault lasts
  held.forEach((h, i) => { if (h) ctx.fillRect(x(i), top.y, x(i + 1) - x(i) + 0.5, low.y + low.h - top.y); });
  ctx.strokeStyle = '#d22';
  for (const i of alarms) {
    ctx.beginPath();
    ctx.moveTo(x(i), top.y);
    ctx.lineTo(x(i), low.y + low.h);
    ctx.stroke();
  }
  ctx.strokeStyle = '#246';
  ctx.beginPath();
  let pen = false;
  values.forEach((v, i) => {
    if (!Number.isFinite(v)) { pen = false; return; }
    const y = top.y + top.h * (1 - (v - lo) / Math.max(hi - lo, 1e-9));
    if (pen) ctx.lineTo(x(i), y); else ctx.moveTo(x(i), y);
    pen = true;
  });
  ctx.stroke();
  ctx.fillStyle = '#888';
  ctx.fillRect(40, low.y + low.h * (1 - threshold), width - 50, 1);
  ctx.fillStyle = '#e80';
  likelihood.forEach((l, i) => { if (l > 0) ctx.fillRect(x(i), low.y + low.h * (1 - l), 2, low.h * l); });
  ctx.fillStyle = '#444';
  ctx.font = '11px sans-serif';
  ctx.fillText(hi.toPrecision(4), 2, top.y + 8);
  ctx.fillText(lo.toPrecision(4), 2, top.y + top.h);
  ctx.fillText('1', 2, low.y + 8);
  ctx.fillText('0', 2, low.y + low.h);
}

async function play(text) {
  const lines = text.split(/\r?\n/);
  const stream = (await sensorLoading).stream();
  const speed = Number($('speed').value);
  const values = [];
  const likelihood = [];
  const alarms = [];
  const held = [];
  const readings = [];
  state.sensor = { done: false, readings };
  let painted = performance.now();
  for (const line of lines) {
    const out = await stream.pushLine(line);
    if (out === null) continue;
    readings.push(out);
    const cell = Number(line.split(',')[1]);
    values.push(line.split(',')[1]?.trim() === '' ? NaN : cell);
    likelihood.push(out.likelihood);
    if (out.isAnomaly) alarms.push(out.index);
    held.push(out.inAlarm);
    if (speed > 0) await new Promise((r) => setTimeout(r, 1000 / speed));
    if (speed > 0 || performance.now() - painted > 100) {
      paintChart(values, likelihood, alarms, held, stream.threshold);
      painted = performance.now();
      const r = stream.report;
      $('streamStatus').textContent = `${r.readings} readings, ${r.alarms} alarms · last: ${out.timestamp} `
        + `score ${out.score.toPrecision(4)}, likelihood ${out.likelihood.toFixed(3)}`;
    }
  }
  paintChart(values, likelihood, alarms, held, stream.threshold);
  const r = stream.report;
  $('streamStatus').textContent = `${r.readings} readings, ${r.alarms} alarms, ${r.outOfOrder} repeated or earlier `
    + `timestamps, ${r.putBack} steps put back for gaps, ${r.missing} missing, ${r.unreadable} unreadable lines`;
  state.sensor = { done: true, readings, report: { ...r } };
}

$('play').addEventListener('click', async () => play(await (await fetch('/sensor.csv')).text()));
chart.addEventListener('dragover', (e) => e.preventDefault());
chart.addEventListener('drop', async (e) => {
  e.preventDefault();
  const file = e.dataTransfer.files[0];
  if (file) await play(await file.text());
});
$('resample').addEventListener('click', sampleGrid);

// -- start -----------------------------------------------------------------------------------

clearDrawing();
await scoreDrawing();
state.firstScoreMs = performance.now(); // from the start of the page's navigation
await ownThreshold();
await sampleGrid();
await scoreDrawing();
state.ready = true;
$('status').textContent = `Ready: the first score came ${Math.round(state.firstScoreMs)} ms after the page started loading.`;
