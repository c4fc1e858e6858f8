"""A fleet on Ray: `vae-edge score --engine ray --series-id` on many series at once,
against each series streamed locally, bit for bit, and with a worker killed mid-run.

The fleet: SERIES machines x STEPS readings of one sensor every minute (a daily-ish
cycle at its own phase, noise, a few spikes), interleaved across Parquet files as a
logger writes them; one conv1d model trained on another machine's first week. The Ray
run is the CLI as a user runs it (a local Ray, started and stopped by the command); the
local one streams each series through EdgeVAE.stream() in this process. Writes
benchmarks/results/fleet.{json,md} (with --train, fleet-training.{json,md}).

With --train READINGS, the fleet also learns: `vae-edge train --engine ray --series-id`
trains a bundle per machine on its first READINGS readings (one CPU and one torch thread
per series), every bundle is loaded, a few are checked against the same series trained
alone, and the fleet is scored with the folder of bundles.

    python benchmarks/fleet.py [--series 1000] [--steps 10000] [--kill] [--train 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
STEP = np.timedelta64(60, "s")
START = np.datetime64("2025-01-01T00:00:00")


def machine(k: int, steps: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    t = np.arange(steps)
    x = np.sin(2 * np.pi * t / 96 + rng.uniform(0, 6)) + 0.1 * rng.standard_normal(steps)
    spikes = rng.integers(0, steps, 3)
    x[spikes] += rng.choice([-3, 3], 3)
    return x


def write_fleet(folder: Path, series: int, steps: int, files: int = 8) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    per_file = steps // files
    for f in range(files):  # file f holds every machine's readings of its stretch of time
        lo, hi = f * per_file, steps if f == files - 1 else (f + 1) * per_file
        ids = np.tile(np.arange(series), hi - lo)
        t = np.repeat(START + np.arange(lo, hi) * STEP, series)
        x = np.stack([machine(k, steps)[lo:hi] for k in range(series)], axis=1).ravel()
        pq.write_table(pa.table({"machine": ids, "timestamp": t, "value": x}),
                       folder / f"part-{f:02d}.parquet", row_group_size=200_000)  # fmt: skip


def train_model(work: Path) -> Path:
    run, bundle = work / "run", work / "bundle"
    lines = ["timestamp,value"] + [
        f"{START + i * STEP},{float(v)!r}".replace("T", " ")
        for i, v in enumerate(machine(10**6, 10080))
    ]  # fmt: skip
    (work / "week.csv").write_text("\n".join(lines) + "\n")
    cli = [sys.executable, "-m", "vae_edge.cli"]
    subprocess.run([*cli, "train", "--data", str(work / "week.csv"), "--window", "auto",
                    "--out", str(run), "-q"], check=True)  # fmt: skip
    subprocess.run([*cli, "export", str(run), "--out", str(bundle)], check=True)
    return bundle


def ray_run(data: Path, bundle: Path, out: Path, kill: bool) -> dict:
    cmd = [sys.executable, "-m", "vae_edge.cli", "score", "--model", str(bundle), str(data),
           "--engine", "ray", "--series-id", "machine", "-o", str(out)]  # fmt: skip
    killed = []

    def kill_a_worker():
        while proc.poll() is None and not killed:
            for p in Path("/proc").iterdir():
                try:
                    if p.name.isdigit() and b"score_series_group" in (p / "cmdline").read_bytes():
                        time.sleep(2.0)
                        os.kill(int(p.name), signal.SIGKILL)
                        killed.append(time.time() - t0)
                        return
                except (OSError, ProcessLookupError):
                    continue
            time.sleep(0.1)

    t0 = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    if kill:
        threading.Thread(target=kill_a_worker, daemon=True).start()
    _, err = proc.communicate()
    seconds = time.time() - t0
    if proc.returncode:
        sys.exit(f"the Ray run failed: {err[-2000:]}")
    return {"seconds": round(seconds, 1), "killed_at_s": killed[0] if killed else None}


def train_fleet(data: Path, work: Path, readings: int, epochs: int, series: int,
                steps: int) -> dict:  # fmt: skip
    """Every machine's first `readings` readings trained on Ray through the CLI into
    work/models/<id>/; the seconds, the bundles that load, and three series trained alone
    (`train --window auto` on a CSV of the same readings) against theirs, byte for byte."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from vae_edge.runtime import EdgeVAE

    first = work / "first"
    first.mkdir()
    table = ds.dataset(data).to_table(filter=ds.field("timestamp") < START + readings * STEP)
    pq.write_table(table, first / "part-00.parquet", row_group_size=100_000)
    cmd = [sys.executable, "-m", "vae_edge.cli", "train", str(first), "--engine", "ray",
           "--series-id", "machine", "--out", str(work / "models"), "--window", "auto",
           "--epochs", str(epochs)]  # fmt: skip
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.time() - t0
    if p.returncode:
        sys.exit(f"the Ray training failed: {p.stderr[-2000:]}")
    bundles = sorted((work / "models").iterdir())
    loaded = sum(EdgeVAE.load(b).manifest.series is not None for b in bundles)
    same = 0
    for k in (0, series // 2, series - 1):
        lines = ["timestamp,value"] + [
            f"{START + i * STEP},{float(v)!r}".replace("T", " ")
            for i, v in enumerate(machine(k, steps)[:readings])
        ]  # fmt: skip
        (work / f"alone-{k}.csv").write_text("\n".join(lines) + "\n")
        cli = [sys.executable, "-m", "vae_edge.cli"]
        subprocess.run([*cli, "train", str(work / f"alone-{k}.csv"), "--window", "auto",
                        "--epochs", str(epochs), "--out", str(work / f"run-{k}"), "-q"],
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run([*cli, "export", str(work / f"run-{k}"), "--out", str(work / f"alone-{k}")],
                       check=True, capture_output=True)  # fmt: skip
        same += all((work / f"alone-{k}" / g).read_bytes() == (work / "models" / str(k) / g)
                    .read_bytes() for g in ("encoder.onnx", "decoder.onnx"))  # fmt: skip
    return {"train_seconds": round(seconds, 1), "bundles": len(bundles), "loaded": loaded,
            "failed": p.stderr.count("not trained"), "alone_equal": f"{same} of 3",
            "summary": p.stdout.strip().splitlines()[-1]}  # fmt: skip


def compare(out: Path, bundle: Path, series: int, steps: int) -> dict:
    import pyarrow.parquet as pq

    from vae_edge.runtime import EdgeVAE

    table = pq.read_table(out, columns=["machine", "index", "score", "likelihood", "is_anomaly"])
    order = np.lexsort((table["index"].to_numpy(), table["machine"].to_numpy()))
    ids = table["machine"].to_numpy()[order]
    cols = {c: table[c].to_numpy()[order] for c in ("index", "score", "likelihood", "is_anomaly")}
    model = EdgeVAE.load(bundle, threads=1)
    t = START + np.arange(steps) * STEP
    unequal, local_seconds, alarms = 0, 0.0, 0
    every_step_once = len(ids) == series * steps and bool(
        np.array_equal(ids, np.repeat(np.arange(series), steps))
        and np.array_equal(cols["index"], np.tile(np.arange(steps), series))
    )
    for k in range(series):
        t0 = time.perf_counter()
        expected = model.stream().push(machine(k, steps), t)
        local_seconds += time.perf_counter() - t0
        at = slice(k * steps, (k + 1) * steps)
        same = (np.array_equal(cols["score"][at], expected.scores)
                and np.array_equal(cols["likelihood"][at], expected.likelihood)
                and np.array_equal(cols["is_anomaly"][at], expected.is_anomaly))  # fmt: skip
        unequal += not same
        alarms += int(expected.is_anomaly.sum())
    return {"rows": len(ids), "every_step_once": every_step_once, "series_unequal": unequal,
            "local_seconds": round(local_seconds, 1), "alarms": alarms}  # fmt: skip


def compare_models(out: Path, models: Path, series: int, steps: int) -> int:
    """The series of a run scored with a bundle per machine that differ from streaming
    each locally through its own bundle."""
    import pyarrow.parquet as pq

    from vae_edge.runtime import EdgeVAE

    table = pq.read_table(out, columns=["machine", "index", "score", "is_anomaly"])
    order = np.lexsort((table["index"].to_numpy(), table["machine"].to_numpy()))
    score, flags = table["score"].to_numpy()[order], table["is_anomaly"].to_numpy()[order]
    t = START + np.arange(steps) * STEP
    unequal = 0
    for k in range(series):
        expected = EdgeVAE.load(models / str(k), threads=1).stream().push(machine(k, steps), t)
        at = slice(k * steps, (k + 1) * steps)
        unequal += not (np.array_equal(score[at], expected.scores)
                        and np.array_equal(flags[at], expected.is_anomaly))  # fmt: skip
    return unequal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--kill", action="store_true", help="also a run with a worker killed")
    parser.add_argument(
        "--train",
        type=int,
        metavar="READINGS",
        help="also train a bundle per machine on its first READINGS readings",
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each --train model")
    args = parser.parse_args()
    trained = None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = train_model(work)
        write_fleet(work / "fleet", args.series, args.steps)
        runs = {}
        for kill in (False, True) if args.kill else (False,):
            out = work / f"out-{kill}"
            r = ray_run(work / "fleet", bundle, out, kill)
            r |= compare(out, bundle, args.series, args.steps)
            runs["worker killed" if kill else "quiet"] = r
            print(json.dumps(r), flush=True)
        if args.train:
            trained = train_fleet(work / "fleet", work, args.train, args.epochs, args.series,
                                  args.steps)  # fmt: skip
            out = work / "out-models"
            r = ray_run(work / "fleet", work / "models", out, False)
            r["series_unequal"] = compare_models(out, work / "models", args.series, args.steps)
            trained["scored_seconds"] = r["seconds"]
            trained["series_unequal_to_local"] = r["series_unequal"]
            print(json.dumps(trained), flush=True)
        window = json.loads((bundle / "vae.json").read_text())["series"]["window"]
    env = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
           "python": platform.python_version(),
           "versions": {d: metadata.version(d) for d in ("vae-edge", "ray", "pyarrow",
                                                         "onnxruntime", "numpy")}}  # fmt: skip
    result = {"environment": env, "series": args.series, "steps": args.steps,
              "window": window, "runs": runs, "trained": trained}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "fleet-training" if args.train else "fleet"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# A fleet on Ray: every series in order, against each streamed locally",
        "",
        f"{env['machine']}; Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f". Written by `python benchmarks/fleet.py {' '.join(sys.argv[1:])}`.",
        "",
        f"{args.series:,} series x {args.steps:,} readings ({args.series * args.steps:,} rows, "
        f"8 Parquet files, the series interleaved), one conv1d model (window {window}).",
        "",
        "| run | Ray seconds (CLI, local Ray) | rows | every step once | series not equal "
        "to local, bit for bit | local seconds (one process) | alarms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['seconds']} | {r['rows']:,} | {r['every_step_once']} | "
                     f"{r['series_unequal']} | {r['local_seconds']} | {r['alarms']} |")  # fmt: skip
    if trained:
        lines += [
            "",
            f"Training: `vae-edge train --engine ray --series-id machine` on each machine's "
            f"first {args.train:,} readings ({args.epochs} epochs each, one CPU and one torch "
            f"thread per series): {trained['train_seconds']} s for {trained['bundles']:,} "
            f"bundles ({trained['summary']}), {trained['loaded']:,} of them loaded, "
            f"{trained['failed']} series failed; three series trained alone gave the same "
            f"graphs byte for byte: {trained['alone_equal']}. Scored with the folder of "
            f"bundles (`score --model models/`): {trained['scored_seconds']} s, series not "
            f"equal to local: {trained['series_unequal_to_local']}.",
        ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
