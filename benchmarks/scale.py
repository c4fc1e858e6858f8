"""Scoring on Ray Data against the single-process `vae-edge score`, on this machine.

    python benchmarks/scale.py [--rows 1000000] [--images 100000]     (make bench-scale)

Two inputs, each written once as Parquet (for --engine ray) and as .npy (the local engine
reads no Parquet: the runtime carries no pyarrow) with the same rows: a table of --rows
rows of 6 features scored by the committed tiny table bundle, and --images MNIST-sized
images (uint8, a tensor column) scored by the shipped MNIST model. Each command is run
whole, as a user runs it (process start, Ray start and stop included): local, then
`--engine ray --actors 1` and `--actors 2`. The start-up cost of a local Ray (ray.init
and ray.shutdown, nothing scored) is measured on its own. Scores are checked equal
between the engines. Writes benchmarks/results/scale.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from report import write_results

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "scale"
TINY = ROOT / "tests" / "data" / "tiny_bundle"
VAE_EDGE = [sys.executable, "-m", "vae_edge.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    inputs = {
        "table": (TINY, _table(args.rows)),
        "MNIST-sized images": (None, _images(args.images)),
    }
    startup = [_ray_startup() for _ in range(3)]
    results = {}
    for name, (model, (npy, parquet, n)) in inputs.items():
        model_args = ["--model", str(model)] if model else []
        runs = {}
        local_out = WORK / f"{npy.stem}-local.npy"
        runs["local"] = _timed([*VAE_EDGE, "score", *model_args, str(npy), "-o", str(local_out)])
        expected = np.load(local_out)
        for actors in (1, 2):
            out = WORK / f"{npy.stem}-ray{actors}"
            runs[f"ray, {actors} actor{'s' * (actors > 1)}"] = _timed([
                *VAE_EDGE, "score", *model_args, str(parquet), "--engine", "ray",
                "--actors", str(actors), "-o", str(out),
            ])  # fmt: skip
            table = pq.read_table(out, columns=["index", "score"])
            order = np.argsort(table.column("index").to_numpy())
            scores = table.column("score").to_numpy()[order]
            if not np.array_equal(scores, expected):
                raise SystemExit(f"{name}: --engine ray with {actors} actors gave other scores")
        warm = {actors: _warm_ray(parquet, model, actors, expected) for actors in (1, 2)}
        results[name] = {
            "rows": n,
            "runs": {k: {"seconds": s, "rows_per_second": n / s} for k, s in runs.items()},
            "warm_ray_seconds": warm,
        }
    result = {
        "what": "vae-edge score, whole commands: local engine (.npy) against --engine ray "
        "(Parquet) on a local Ray; the same rows, the same scores",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "versions": {d: metadata.version(d) for d in ("ray", "pyarrow", "onnxruntime", "numpy")},
        "ray_startup_seconds": startup,
        "inputs": results,
    }
    _write(result)


def _table(n: int):
    x = np.random.default_rng(0).standard_normal((n, 6)).astype(np.float32)
    npy, parquet = WORK / "table.npy", WORK / "table.parquet"
    np.save(npy, x)
    pq.write_table(pa.table({f"f{j}": x[:, j] for j in range(6)}), parquet, row_group_size=65_536)
    return npy, parquet, n


def _images(n: int):
    """Digits sampled from the shipped model (rounded to uint8), as a Ray tensor column."""
    import ray

    from vae_edge.runtime import EdgeVAE

    model = EdgeVAE.load()
    x = np.concatenate([
        model.sample(min(10_000, n - i), seed=i).round().astype(np.uint8)
        for i in range(0, n, 10_000)
    ])  # fmt: skip
    npy, parquet = WORK / "images.npy", WORK / "images"
    np.save(npy, x)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    ray.data.from_numpy(x).repartition(16).write_parquet(str(parquet))
    ray.shutdown()
    return npy, parquet, n


def _warm_ray(parquet: Path, model, actors: int, expected: np.ndarray) -> float:
    """Seconds of read, score and write on a Ray already started, its worker processes
    warm (the second of two runs): what each added node's actors would sustain."""
    import logging

    import ray

    from vae_edge.ray_data import read_parquet, score_dataset, write_parquet

    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    try:
        for attempt in range(2):
            out = WORK / f"warm-{parquet.stem}-{actors}-{attempt}"
            started = time.perf_counter()
            write_parquet(score_dataset(read_parquet(parquet), model, actors=actors), out)
            seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    table = pq.read_table(out, columns=["index", "score"])
    scores = table.column("score").to_numpy()[np.argsort(table.column("index").to_numpy())]
    if not np.array_equal(scores, expected):
        raise SystemExit(f"{parquet}: warm Ray run with {actors} actors gave other scores")
    print(f"{seconds:7.1f} s  warm Ray, {actors} actors, {parquet.name}", flush=True)
    return seconds


def _ray_startup() -> float:
    code = (
        "import time, os; t = time.perf_counter(); import ray; "
        "ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level='ERROR'); "
        "ray.shutdown(); print(time.perf_counter() - t)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    print(f"{seconds:7.1f} s  {' '.join(command[3:])}", flush=True)
    return seconds


def _write(result: dict) -> None:
    startup = result["ray_startup_seconds"]
    header = (
        f"{result['what']}; {result['machine']}; "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        + f". Local Ray start-up and shutdown alone: {min(startup):.1f} s (best of "
        f"{len(startup)}: {', '.join(f'{s:.1f}' for s in startup)})."
    )
    lines = []
    for title, timings in (
        ("engine", lambda r: {k: run["seconds"] for k, run in r["runs"].items()}),
        ("Ray already started, workers warm",
         lambda r: {f"{a} actor{'s' * (int(a) > 1)}": t for a, t in r["warm_ray_seconds"].items()}),
    ):  # fmt: skip
        lines += [
            *([""] if lines else []),
            f"| input | rows | {title} | seconds | rows/s | vs local |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in result["inputs"].items():
            local = r["runs"]["local"]["seconds"]
            for label, seconds in timings(r).items():
                lines.append(
                    f"| {name} | {r['rows']:,} | {label} | {seconds:.1f} | "
                    f"{r['rows'] / seconds:,.0f} | {local / seconds:.2f}x |"
                )
    write_results("scale", result, header, "\n".join(lines))


if __name__ == "__main__":
    main()
