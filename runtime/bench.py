"""Latency and throughput of a bundle with onnxruntime and NumPy alone (`vae-edge bench`).

Each job is timed two ways on the same sessions: through EdgeVAE (validation, preprocessing,
chunking included) and as the bare onnxruntime calls with hand-written NumPy, the floor
the wrapper adds to. The two take turns in short bursts, so load from other processes
falls on both alike; warm-up calls are excluded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from vae_edge.runtime.model import EdgeVAE
from vae_edge.runtime.scoring import LOGVAR_MAX, row_noise, scores_at_mean

PERCENTILES = (50, 95, 99)


def data_like_samples(model: EdgeVAE, n: int, seed: int = 1) -> np.ndarray:
    """n samples from the model in the data's units and dtype (rounded grey levels for
    uint8 models): realistic inputs for timing and for comparing variants."""
    x = model.sample(n, seed=seed)
    return np.round(x).astype(np.uint8) if model.manifest.data_dtype == "uint8" else x


def time_calls(
    contenders: dict[str, Callable[[], object]], seconds: float = 3.0, burst: float = 0.1
) -> dict[str, np.ndarray]:
    """Call times in microseconds of each contender, about `seconds` of calls each."""
    runs = {name: [] for name in contenders}
    for fn in contenders.values():
        for _ in range(3):
            fn()  # warm-up: first calls allocate and pick kernels
    for _ in range(max(1, round(seconds / burst))):
        for name, fn in contenders.items():
            deadline = time.perf_counter() + burst
            while True:
                t0 = time.perf_counter_ns()
                fn()
                runs[name].append(time.perf_counter_ns() - t0)
                if time.perf_counter() >= deadline:
                    break
    return {name: np.array(r) / 1e3 for name, r in runs.items()}


def summarize(times_us: np.ndarray, batch: int) -> dict:
    """Percentiles in microseconds, the number of calls and samples per second at p50."""
    p = {f"p{q}_us": float(np.percentile(times_us, q)) for q in PERCENTILES}
    return p | {"calls": len(times_us), "samples_per_s": batch / p["p50_us"] * 1e6}


def score_jobs(model: EdgeVAE, x: np.ndarray) -> dict[str, Callable[[], object]]:
    """-ELBO at z = mu, measured from the floor (no complexity), through EdgeVAE and by
    hand: the same work from the same raw input (the likelihood's preprocessing, loss and
    floor included) without the checks, batching and dispatch."""
    bundle, likelihood = model.bundle, model.likelihood

    def bare():
        batch = likelihood.prepare(x)
        mu, logvar = bundle.run_encoder(batch.xp)
        losses = likelihood.nll(batch, bundle.run_decoder(mu))
        return scores_at_mean(losses, mu, logvar, "elbo")

    return {"vae_edge": lambda: model.score(x, 0, 0, "elbo", complexity=False), "bare_ort": bare}


def default_score_jobs(model: EdgeVAE, x: np.ndarray) -> dict[str, Callable[[], object]]:
    """The model's default score (its manifest's default_score) through EdgeVAE, and by hand
    from the same raw input in as few NumPy calls as the arithmetic allows: the
    preprocessing, the two graphs (L draws of the manifest's stored noise, or of row_noise
    in a bundle without it), the loss from
    its floor, the closed-form KL, -L_k's log-mean-exp, and the steps' code length from a
    table of log2(1 + step) for uint8 images. The floor the runtime's checks, settings and
    dispatch add to; `vae-edge bench` reports their ratio."""
    m, bundle = model.manifest, model.bundle
    default = m.default_score
    enc, dec = bundle.encoder, bundle.decoder
    enc_in, dec_in = m.encoder.inputs[0], m.decoder.inputs[0]
    enc_out, dec_out = m.encoder.outputs, m.decoder.outputs[:1]
    p = m.preprocessing
    bernoulli = m.likelihood == "bernoulli"
    grey_uint8 = bernoulli and x.dtype == np.uint8
    if grey_uint8:  # the floor of each of the 256 levels, as the runtime keeps it
        levels = p.apply(np.arange(256, dtype=np.uint8))
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.nan_to_num(levels * np.log(levels) + (1 - levels) * np.log(1 - levels))
    code_length = np.log2(1 + np.arange(256, dtype=np.float32))
    precision = None if m.observation_logvar is None else model.likelihood._precision
    n, k, draws = len(x), m.latent_dim, default.samples
    stored = None if default.eps is None else np.asarray(default.eps, np.float32)

    def bare():
        eps = None if draws == 0 else (row_noise(0, 0, n, draws, k) if stored is None
                                       else np.broadcast_to(stored, (n, draws, k)))  # fmt: skip
        if p.kind == "scale":
            xp = x * np.float32(p.scale)
        else:
            xp = ((x.reshape(n, -1, p._mean.size) - p._mean) / p._std).reshape(x.shape)
        mu, logvar = enc.run(enc_out, {enc_in: xp.astype(np.float32, copy=False)})
        logvar = np.minimum(logvar, np.float32(LOGVAR_MAX))
        z = mu if draws == 0 else (mu[:, None] + np.exp(0.5 * logvar)[:, None] * eps)
        out = dec.run(dec_out, {dec_in: z.reshape(-1, k)})[0].reshape(n, max(draws, 1), -1)
        target = xp.reshape(n, 1, -1)
        if bernoulli:
            loss = np.log(1 + np.exp(-np.abs(out))) + np.maximum(out, 0) - target * out
            floor = entropy[x] if grey_uint8 else None
            recon = loss.sum(axis=2) - (0 if floor is None else floor.reshape(n, 1, -1).sum(2))
        else:
            loss = np.square(target - out)
            recon = 0.5 * (loss if precision is None else loss * precision.reshape(-1)).sum(2)
        kl = -0.5 * (1 + logvar - np.square(mu) - np.exp(logvar)).sum(1)
        if default.score_type == "recon":
            score = recon.mean(1)
        elif default.score_type == "elbo":
            score = recon.mean(1) + kl
        else:
            log_w = -recon - 0.5 * (np.square(z) - np.square(eps) - logvar[:, None]).sum(2)
            top = log_w.max(1, keepdims=True)
            score = -(top[:, 0] + np.log(np.exp(log_w - top).mean(1)))
        if default.complexity:
            levels16 = (x if x.dtype == np.uint8 else np.rint(xp * 255)).astype(np.int16)
            across = np.abs(np.diff(levels16, axis=-1)).reshape(n, -1)
            down = np.abs(np.diff(levels16, axis=-2)).reshape(n, -1)
            bits = x[0].size + code_length[across].sum(1) + code_length[down].sum(1)
            score = score / bits
        return score

    return {"vae_edge": lambda: model.score(x), "bare_ort": bare}


def sample_jobs(model: EdgeVAE, n: int) -> dict[str, Callable[[], object]]:
    """n new samples in the data's units through EdgeVAE and by hand."""
    bundle, likelihood, k = model.bundle, model.likelihood, model.manifest.latent_dim

    def bare():
        z = np.random.default_rng(0).standard_normal((n, k), dtype=np.float32)
        return likelihood.mean(bundle.run_decoder(z))

    return {"vae_edge": lambda: model.sample(n, seed=0), "bare_ort": bare}


def run(model: EdgeVAE, batch_sizes=(1, 32, 1024, 4096), seconds: float = 3.0, progress=None):
    """Time score and sample at each batch size; one row per (job, batch)."""
    rows = []
    for n in batch_sizes:
        x = data_like_samples(model, n)
        jobs = (("score", default_score_jobs(model, x)), ("sample", sample_jobs(model, n)))
        for job, contenders in jobs:
            times = time_calls(contenders, seconds / 2)
            row = {"job": job, "batch": n} | {k: summarize(t, n) for k, t in times.items()}
            row["vae_edge_over_bare"] = row["vae_edge"]["p50_us"] / row["bare_ort"]["p50_us"]
            rows.append(row)
            if progress:
                progress(row)
    return rows


def gpu_name() -> str:
    """The GPU's name and driver as nvidia-smi reports them, or why it cannot be told."""
    import subprocess

    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown (nvidia-smi: {e})"
    return out.stdout.strip() or f"unknown (nvidia-smi: {out.stderr.strip()})"


def table(rows: list[dict]) -> str:
    """Markdown table of run()'s rows."""
    lines = [
        "| job | batch | vae-edge p50 / p95 / p99 (us) | bare ORT p50 (us) | vae-edge / bare "
        "| samples/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        v = r["vae_edge"]
        lines.append(
            f"| {r['job']} | {r['batch']} | {v['p50_us']:.1f} / {v['p95_us']:.1f} / "
            f"{v['p99_us']:.1f} | {r['bare_ort']['p50_us']:.1f} | {r['vae_edge_over_bare']:.2f}x "
            f"| {v['samples_per_s']:,.0f} |"
        )
    return "\n".join(lines)
