"""Golden vectors that hold every port to Python (`make golden`): inputs and the Python
runtime's outputs for the shipped MNIST model, a table model and a series model, written to
js/test/golden/. The JavaScript tests (node --test, and the page in Chromium) compare their
numbers with these; tests/test_golden.py checks that Python still gives them.

    python tests/make_golden.py [--models]

--models also retrains the two small bundles the vectors use (seeded; torch needed):
golden/table_model (the tiny table model with a threshold calibrated on its data) and
golden/series_model (a conv1d windowed model of a 5-minute sensor, with timestamps).
Without it, only the vectors are written, from the committed bundles.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.anomaly import calibrate, write_threshold
from vae_edge.runtime.errors import VAEEdgeError

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "js" / "test" / "golden"
STEP = 300  # the sensor's step, seconds
START = np.datetime64("2026-03-01T00:00:00", "s")


def sensor_values(steps: int, seed: int) -> np.ndarray:
    """A 5-minute sensor with a 4-hour cycle and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    return 10 + 3 * np.sin(2 * np.pi * t / 48) + 0.3 * rng.standard_normal(steps)


def build_models() -> None:
    import torch

    from vae_edge.export.onnx_export import export_run
    from vae_edge.training.train import train

    sys.path.insert(0, str(Path(__file__).parent))
    from make_tiny_bundle import tiny_table

    torch.set_num_threads(1)
    table = GOLDEN / "table_model"
    shutil.rmtree(table, ignore_errors=True)
    shutil.copytree(ROOT / "tests" / "data" / "tiny_bundle", table)
    write_threshold(table, calibrate(EdgeVAE.load(table), tiny_table(500, seed=1), quantile=0.95))
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "sensor.csv"
        times = START + np.arange(1000) * np.timedelta64(STEP, "s")
        csv.write_text("timestamp,value\n" + "".join(
            f"{str(t).replace('T', ' ')},{v:.4f}\n" for t, v in zip(times, sensor_values(1000, 0), strict=True)))  # fmt: skip
        train(str(csv), Path(tmp) / "run", window=48, epochs=30, seed=0, progress=False)
        export_run(Path(tmp) / "run", GOLDEN / "series_model", force=True)


def stream_lines() -> list[str]:
    """A live sensor's CSV lines, after the training week: jittered timestamps, a repeated
    and an earlier one, a gap of 3 steps, a missing value, an unreadable line, a spike and
    a lasting shift of level (held, then learnt)."""
    n = 900
    values = sensor_values(n, 1)
    values[520] += 12  # the spike
    values[600:] += 30  # the shift
    jitter = np.random.default_rng(2).integers(-25, 26, n)
    times = START + np.timedelta64(4 * 7 * 86400, "s") + np.arange(n) * np.timedelta64(STEP, "s")
    times = times + jitter.astype("timedelta64[s]")
    times[100] = times[99]  # repeated
    times[200] = times[199] - np.timedelta64(600, "s")  # earlier
    times[300:] += np.timedelta64(3 * STEP, "s")  # a gap of 3 steps
    lines = ["timestamp,value"]
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        cell = "" if i == 400 else f"{v:.4f}"  # a missing value
        stamp = str(t).replace("T", " ")
        lines.append("not a reading" if i == 450 else f"{stamp},{cell}")
    return lines


def floats(a) -> list[float | None]:
    """Numbers for JSON; NaN (a missing value) as null."""
    return [None if np.isnan(v) else float(v) for v in np.asarray(a, np.float64).ravel()]


def errors(model: EdgeVAE, where: str, cases) -> list[dict]:
    """Python's one-line messages for bad input (the message without the bundle's name)."""
    out = []
    for name, x in cases:
        try:
            model.score(x)
        except VAEEdgeError as e:
            out.append({"case": name, "shape": list(np.shape(x)), "data": floats(x),
                        "message": str(e).replace(where, "{bundle}")})  # fmt: skip
        else:
            raise AssertionError(f"{name}: not refused")
    return out


def mnist_inputs() -> np.ndarray:
    """Digits the shipped model samples, noise, inverted and shifted digits."""
    digits = np.round(EdgeVAE.load().sample(8, seed=3)).astype(np.float32)
    noise = np.random.default_rng(0).integers(0, 256, (2, 28, 28)).astype(np.float32)
    return np.concatenate([digits, noise, 255 - digits[:2], np.roll(digits[:2], 8, axis=2)])


def mnist(x: np.ndarray) -> dict:
    model = EdgeVAE.load()
    features = model.feature_scores(x[:2])
    return {
        "bundle": "../../../runtime/default_model",
        "input": {"shape": list(x.shape), "data": floats(x)},
        "score": floats(model.score(x)),
        "features": {"shape": list(features.shape), "data": floats(features)},
        "predict": {"threshold": 0.012, "is_anomaly": floats(model.predict(x, threshold=0.012))},
        "errors": errors(
            model,
            "default model",
            [
                ("out of range", np.full((1, 28, 28), 300, np.float32)),
                ("wrong shape", np.zeros((2, 27, 28), np.float32)),
            ],
        ),  # fmt: skip
    }


def table_inputs() -> np.ndarray:
    """Rows like the training data's, far out, beyond the encoder's clip, at float32's top."""
    sys.path.insert(0, str(Path(__file__).parent))
    from make_tiny_bundle import tiny_table

    x = tiny_table(40, seed=2)
    x[-4] *= 6  # far out
    x[-3] = [1e6, 0, 0, 0, 0, 0]  # beyond the encoder's clip
    x[-2] = np.finfo(np.float32).max  # as far as float32 goes
    return x


def table(x: np.ndarray) -> dict:
    model = EdgeVAE.load(GOLDEN / "table_model")
    features = model.feature_scores(x)
    bad = x[:2].copy()
    bad[1, 3] = np.nan
    return {
        "bundle": "table_model",
        "input": {"shape": list(x.shape), "data": floats(x)},
        "score": floats(model.score(x)),
        "features": {"shape": list(features.shape), "data": floats(features)},
        "threshold": model.threshold,
        "predict": {"threshold": None, "is_anomaly": floats(model.predict(x))},
        "errors": errors(
            model,
            str(GOLDEN / "table_model"),
            [
                ("non-finite", bad),
                ("wrong shape", np.zeros((3, 5), np.float32)),
            ],
        ),  # fmt: skip
    }


def series(lines: list[str]) -> dict:
    model = EdgeVAE.load(GOLDEN / "series_model")
    stream = model.stream()
    batches = [b for b in (stream.push_line(line) for line in lines) if b is not None]
    report = stream.close()
    likelihood = np.concatenate([b.likelihood for b in batches])
    flags = np.concatenate([b.is_anomaly for b in batches])
    held = np.concatenate([b.in_alarm for b in batches])
    assert flags.sum() >= 2, "the golden stream must hold the spike's and the shift's alarms"
    assert not held[-20:].any(), "the shift must be learnt before the golden stream ends"
    return {
        "bundle": "series_model",
        "lines": lines,
        "timestamps": [str(t) for b in batches for t in b.timestamps],
        "score": floats(np.concatenate([b.scores for b in batches])),
        "likelihood": floats(likelihood),
        "is_anomaly": floats(flags),
        "in_alarm": floats(held),
        "report": {
            "readings": report.readings,
            "alarms": report.alarms,
            "outOfOrder": report.out_of_order,
            "putBack": report.put_back,
            "missing": report.missing,
            "unreadable": report.unreadable,
        },  # fmt: skip
    }


def vectors() -> dict[str, dict]:
    return {"mnist": mnist(mnist_inputs()), "table": table(table_inputs()),
            "series": series(stream_lines())}  # fmt: skip


def write(out: Path = GOLDEN) -> None:
    for name, vector in vectors().items():
        (out / f"{name}.json").write_text(json.dumps(vector) + "\n")
    # the page's example sensor: the golden stream's lines
    (ROOT / "js" / "web" / "sensor.csv").write_text("\n".join(stream_lines()) + "\n")


if __name__ == "__main__":
    GOLDEN.mkdir(parents=True, exist_ok=True)
    if "--models" in sys.argv:
        build_models()
    write()
