"""Sensor series: reading, windowed models, a score per step, streaming, the CLI."""

import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from conftest import run_cli

from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.errors import BundleError, InputError
from vae_edge.runtime.manifest import Manifest
from vae_edge.runtime.series import (
    MOST_MISSING,
    auto_window,
    dominant_period,
    read_series,
)

WINDOW = 16
CHANNELS = ["pressure", "flow", "temp", "vib_x", "vib_y"]


def pump(steps: int, seed: int = 0) -> np.ndarray:
    """A multichannel sensor stream: five channels sharing a 24-step cycle at different
    phases and scales, with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    phase = np.arange(len(CHANNELS))[None] * 0.7
    scale = np.array([1.0, 50.0, 0.1, 3.0, 1e3])
    return (np.sin(2 * np.pi * t / 24 + phase) + 0.05 * rng.standard_normal((steps, 5))) * scale


def write_csv(path, values, start="2024-01-01 00:00:00", step_s=60, drop=(), names=CHANNELS):
    t0 = np.datetime64(start, "s")
    lines = ["timestamp," + ",".join(names)]
    for i, row in enumerate(values):
        if i in drop:
            continue
        cells = ["" if np.isnan(v) else repr(float(v)) for v in row]
        lines.append(f"{t0 + i * np.timedelta64(step_s, 's')}".replace("T", " ") + ","
                     + ",".join(cells))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def pump_bundle(tmp_path_factory):
    """A windowed model of the five-channel pump, trained from its CSV (with a gap and
    missing readings) through `train`, exported."""
    from vae_edge.export.onnx_export import export_run
    from vae_edge.training.train import train

    folder = tmp_path_factory.mktemp("pump")
    values = pump(3000)
    values[100:103, 2] = np.nan
    csv = write_csv(folder / "pump.csv", values, drop=range(500, 505))
    train(str(csv), folder / "run", window=WINDOW, epochs=15, progress=False)
    export_run(folder / "run", folder / "bundle")
    return folder / "bundle"


# -- reading -----------------------------------------------------------------------------


def test_csv_series_gaps_and_missing_readings(tmp_path):
    values = pump(200)
    values[10, 1] = np.nan
    csv = write_csv(tmp_path / "s.csv", values, drop=(50, 51, 52))
    s = read_series(csv)
    assert s.channels == CHANNELS and s.timestamp_column == "timestamp"
    assert s.step_seconds == 60 and s.put_back == 3 and len(s.values) == 200
    assert np.isnan(s.values[50:53]).all() and np.isnan(s.values[10, 1])
    np.testing.assert_allclose(s.values[53:], values[53:])
    assert str(s.timestamps[51]) == "2024-01-01T00:51:00"  # a put-back step has its time
    chosen = read_series(csv, columns=["vib_y", "flow"])
    assert chosen.channels == ["vib_y", "flow"]
    np.testing.assert_allclose(chosen.values[:10], values[:10, [4, 1]])


def test_series_errors_are_one_line(tmp_path):
    values = pump(100)
    backwards = write_csv(tmp_path / "b.csv", values)
    lines = backwards.read_text().splitlines()
    lines[40], lines[41] = lines[41], lines[40]
    backwards.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="line 42: timestamp .* is not after the one before"):
        read_series(backwards)
    in_file_order = read_series(backwards, timestamp="none")  # read as it is, no completion
    assert in_file_order.timestamps is None and in_file_order.channels == CHANNELS
    mostly = values.copy()
    mostly[: int(len(values) * (MOST_MISSING + 0.1))] = np.nan
    with pytest.raises(InputError, match="60% of the steps are missing"):
        read_series(write_csv(tmp_path / "m.csv", mostly))
    with pytest.raises(InputError, match="no column 'nope'"):
        read_series(backwards, columns=["nope"])
    bad = tmp_path / "x.csv"
    bad.write_text("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,abc\n")
    with pytest.raises(InputError, match="line 3: 'abc' is not a number"):
        read_series(bad)
    bad.write_text("timestamp,value\n2024-01-01 00:00:00,1\n,2\n")  # a reading with no time
    with pytest.raises(InputError, match="line 3: '' is not a timestamp"):
        read_series(bad)


def test_npy_series_and_plain_csv(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(50.0))
    s = read_series(tmp_path / "one.npy")
    assert s.values.shape == (50, 1) and s.timestamps is None
    (tmp_path / "plain.csv").write_text("1.5,2\n,3\n4,5\n")  # no header, no timestamps
    s = read_series(tmp_path / "plain.csv")
    assert s.channels == ["0", "1"] and np.isnan(s.values[1, 0])


def test_nab_series_as_they_are(data_dir):
    nab = data_dir / "nab"
    ambient = read_series(nab / "realKnownCause__ambient_temperature_system_failure.csv")
    assert ambient.step_seconds == 3600 and ambient.put_back == 621
    with pytest.raises(InputError, match="of the steps are missing"):
        read_series(nab / "realKnownCause__rogue_agent_key_hold.csv")  # 65% after completion
    with pytest.raises(InputError, match="timestamps must increase"):
        read_series(nab / "realKnownCause__machine_temperature_system_failure.csv")
    taxi = read_series(nab / "realKnownCause__nyc_taxi.csv")
    assert dominant_period(taxi.values, (8, 256)) == 48  # a day of half hours
    assert dominant_period(taxi.values) == 336  # a week of them stands higher
    assert auto_window(taxi.values) == 336
    assert auto_window(pump(2000)) == 64  # a 24-step cycle: at least 64
    assert auto_window(np.random.default_rng(0).standard_normal((500, 1))) == 128  # no period


# -- the windowed model ------------------------------------------------------------------


def test_manifest_records_the_series(pump_bundle):
    m = EdgeVAE.load(pump_bundle).manifest
    assert m.input_shape == (WINDOW, 5) and m.series.window == WINDOW
    assert m.series.channels == CHANNELS and m.series.timestamp == "timestamp"
    assert m.series.step_seconds == 60 and m.series.step_score == "window_mean"
    assert len(m.preprocessing.mean) == 5  # per channel, not per window position
    assert not m.is_image and not m.has_complexity
    assert sum(p.stat().st_size for p in pump_bundle.iterdir()) < 1_000_000
    d = m.to_dict()
    d["series"]["window"] = 8
    with pytest.raises(BundleError, match=r"input_shape must be \[window, channels\]"):
        Manifest.from_dict(d)


def with_rule(bundle, rule, tmp_path):
    """A copy of the bundle whose manifest says another step-score rule."""
    import shutil

    copy = tmp_path / rule
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "vae.json").read_text())
    manifest["series"]["step_score"] = rule
    (copy / "vae.json").write_text(json.dumps(manifest))
    return EdgeVAE.load(copy)


@pytest.mark.parametrize("rule", ["window_mean", "window_end"])
def test_a_score_per_step_streamed_bit_for_bit(pump_bundle, rule, tmp_path):
    model = with_rule(pump_bundle, rule, tmp_path)
    x = pump(400, seed=1)
    x[200:203, 3] = np.nan
    windows = model.score(np.lib.stride_tricks.sliding_window_view(x, WINDOW, axis=0)
                          .transpose(0, 2, 1))  # one score per window  # fmt: skip
    for samples in (0, 3):
        whole = model.score(x, samples=samples)
        assert whole.shape == (400,) and np.isfinite(whole).all()
        scorer = model.stream(samples=samples)
        got = []
        for i, reading in enumerate(x):
            batch = scorer.push(reading)
            if i < WINDOW - 1:
                assert batch is None
            else:  # one step known per reading: the last (end) or the first of the window
                known = i if rule == "window_end" else i - WINDOW + 1
                assert batch.start + len(batch.scores) == known + 1
                got.append(batch.scores)
        last = scorer.finish()
        assert (last is None) == (rule == "window_end")
        got += [] if last is None else [last.scores]
        assert np.array_equal(np.concatenate(got), whole)
        pieces = model.stream(samples=samples, per_feature=True)
        chunks = [pieces.push(c) for c in np.array_split(x, [3, 40, 41, 250])] + [pieces.finish()]
        assert np.array_equal(np.concatenate([c.scores for c in chunks if c]), whole)
        one_by_one = model.stream(samples=samples, per_feature=True)
        features = [one_by_one.push(r) for r in x] + [one_by_one.finish()]
        features = np.concatenate([b.feature_losses for b in features if b])
        assert np.array_equal(features, np.concatenate([c.feature_losses for c in chunks if c]))
    whole = model.score(x)
    if rule == "window_end":  # the first W - 1 steps take the first window's score
        assert (whole[: WINDOW - 1] == windows[0]).all()
        np.testing.assert_array_equal(whole[WINDOW - 1 :], windows)
    else:  # the mean over the windows that hold the step
        for step in (0, 5, 15, 100, 390, 399):
            held = windows[max(0, step - WINDOW + 1) : step + 1]
            np.testing.assert_allclose(whole[step], held.mean(dtype=np.float64), rtol=1e-6)


def test_an_anomaly_scores_high_in_its_channel(pump_bundle):
    model = EdgeVAE.load(pump_bundle)
    x = pump(300, seed=2)
    x[200, 1] += 40 * 50.0  # a spike in flow
    scores = model.score(x)
    assert scores[185:201].min() > np.quantile(scores[:170], 0.99)  # the steps beside it
    losses = model.feature_scores(x)
    assert losses.shape == (300, 5) and np.argmax(losses[195]) == 1
    assert np.isfinite(model.score(np.full((40, 5), 1e30))).all()


def test_missing_readings_are_left_out_not_zero_filled(pump_bundle):
    model = EdgeVAE.load(pump_bundle)
    x = pump(100, seed=3)
    gone = x.copy()
    gone[60, 0] = np.nan
    zero = x.copy()
    zero[60, 0] = 0.0
    s_gone, s_zero = model.score(gone), model.score(zero)
    assert np.isfinite(s_gone).all()
    assert not np.allclose(s_gone[45:61], s_zero[45:61])
    assert (model.feature_scores(gone)[45:61, 1:] > 0).all()
    with pytest.raises(InputError, match="infinite"):
        model.score(np.where(np.isnan(gone), np.inf, gone))


def test_stream_memory_is_constant_over_a_million_readings(pump_bundle):
    model = EdgeVAE.load(pump_bundle)
    scorer = model.stream()
    chunk = pump(10_000, seed=4)
    peaks = []
    tracemalloc.start()
    for i in range(100):  # 1,000,000 readings
        scorer.push(chunk)
        if i in (9, 99):
            peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
    assert scorer.steps == 1_000_000
    assert peaks[1] <= peaks[0] * 1.05  # no growth from 100k to 1M readings
    one_by_one = model.stream()
    readings = pump(20_000, seed=5)
    tracemalloc.start()
    for i, reading in enumerate(readings):  # the one-reading path keeps views, not copies
        one_by_one.push(reading)
        if i == 1999:
            early = tracemalloc.get_traced_memory()[0]
    late = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert late <= early + 4096  # what is held after 2,000 readings and after 20,000


def test_calibrate_evaluate_and_detector_per_step(pump_bundle, tmp_path):
    from vae_edge.runtime.anomaly import calibrate, evaluate
    from vae_edge.training.detector import VAEDetector

    model = EdgeVAE.load(pump_bundle)
    x = pump(500, seed=5)
    t = calibrate(model, x, quantile=0.99)
    assert t.count == 500
    x[300:310, 4] *= 3
    y = np.zeros(500)
    y[300:326] = 1
    y[10] = np.nan  # an unlabelled step
    result = evaluate(model, x, y, threshold=t.value)
    assert result["n"] == 499 and result["auroc"] > 0.9

    detector = VAEDetector(window=WINDOW, epochs=3, contamination=0.05).fit(pump(800))
    assert detector.decision_scores_.shape == (800,)
    assert detector.predict(x).shape == (500,)


# -- the command line ---------------------------------------------------------------------


def test_cli_train_score_stream(tmp_path, pump_bundle):
    csv = write_csv(tmp_path / "p.csv", pump(600), drop=(300,))
    r = run_cli("train", "--data", csv, "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 2 and "is a timestamp: a series?" in r.stderr and "--window" in r.stderr
    r = run_cli("train", "--data", csv, "--out", tmp_path / "run", "--window", "auto",
                "--epochs", "3", "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "windows of 64 steps x 5 channel(s)" in r.stdout  # the pump's cycle, at least 64

    r = run_cli("score", "--model", pump_bundle, csv, "--per-feature", "-o", tmp_path / "s.csv")
    assert r.returncode == 0, r.stderr
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "index,timestamp,score," + ",".join(f"feature_{c}" for c in CHANNELS)
    assert len(lines) == 601 and lines[301].split(",")[1] == "2024-01-01T05:00:00"
    scores = np.array([float(line.split(",")[2]) for line in lines[1:]], np.float32)
    series = read_series(csv)
    assert np.array_equal(scores, EdgeVAE.load(pump_bundle).score(series.values))

    r = run_cli("score", "--model", pump_bundle, csv, "--engine", "ray", "-o", tmp_path / "r")
    assert r.returncode == 2 and "does not score windowed models" in r.stderr


def test_cli_stream_answers_each_reading_as_it_arrives(pump_bundle, tmp_path):
    csv = write_csv(tmp_path / "p.csv", pump(40))
    lines = csv.read_text().splitlines()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vae_edge.cli", "score", "--model", str(pump_bundle), "-", "--stream"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for line in lines[: WINDOW + 1]:  # the header and the first window
            proc.stdin.write(line + "\n")
        proc.stdin.flush()
        out = [proc.stdout.readline() for _ in range(2)]  # header, step 0 at once
        assert out[0].startswith("index,timestamp,score") and out[1].startswith("0,2024-01-01")
        proc.stdin.write(lines[WINDOW + 1] + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("1,")  # answered before EOF
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()
    rest = proc.stdout.read().splitlines()  # the last W - 1 steps of window_mean, at EOF
    assert [line.split(",")[0] for line in rest] == [str(i) for i in range(2, WINDOW + 1)]


def test_cli_calibrate_and_evaluate_with_labels(pump_bundle, tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(pump_bundle, bundle)
    csv = write_csv(tmp_path / "p.csv", pump(400, seed=6))
    r = run_cli("calibrate", "--model", bundle, "--data", csv)
    assert r.returncode == 0, r.stderr and "of 400 elbo scores" in r.stdout
    x = pump(400, seed=7)
    x[200:210, 0] *= 4
    labels = np.zeros((400, 1))
    labels[200:226] = 1
    csv = write_csv(tmp_path / "l.csv", np.hstack([x, labels]), names=[*CHANNELS, "label"])
    r = run_cli("evaluate", "--model", bundle, "--data", csv, "--iwae-k", "2", "--json",
                tmp_path / "e.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["n"] == 400 and result["n_anomalies"] == 26 and result["auroc"] > 0.9
