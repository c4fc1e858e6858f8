"""Sensor series: reading, windowed models, a score per step, streaming, the CLI."""

import json
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.alarm import ALARM_THRESHOLD, HISTORY, LEARNING, AnomalyLikelihood
from vae_edge.runtime.errors import BundleError, InputError
from vae_edge.runtime.manifest import Manifest
from vae_edge.runtime.series import (
    MOST_MISSING,
    SeriesStream,
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
    s = read_series(backwards)  # an earlier timestamp is the next step, in file order
    assert s.out_of_order == 1 and s.put_back == 1  # reading 39 came after 40, a step late
    np.testing.assert_allclose(s.values[[38, 40, 41, 42]], values[[38, 40, 39, 41]])
    assert np.isnan(s.values[39]).all()
    in_file_order = read_series(backwards, timestamp="none")  # read as it is, no completion
    assert in_file_order.timestamps is None and in_file_order.channels == CHANNELS
    mostly = values.copy()
    mostly[: int(len(values) * (MOST_MISSING + 0.1))] = np.nan
    with pytest.raises(InputError, match="60 of its 100 readings have missing values"):
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


def test_irregular_sampling_is_put_on_its_grid(tmp_path):
    """A sensor reporting about every 5 minutes with jitter, a repeated timestamp and a
    3-hour gap: trained on its 5-minute grid, not refused as mostly missing."""
    rng = np.random.default_rng(0)
    n = 600
    seconds = np.arange(n) * 300 + rng.integers(-40, 41, n)
    seconds[300:] += 3 * 3600  # a 3-hour gap
    seconds[100] = seconds[99]  # a repeated timestamp
    t = np.datetime64("2024-03-01 00:00:00", "s") + seconds.astype("timedelta64[s]")
    values = np.sin(np.arange(n) / 10.0)
    csv = tmp_path / "jitter.csv"
    csv.write_text("timestamp,value\n" + "".join(
        f"{str(s).replace('T', ' ')},{float(v)!r}\n" for s, v in zip(t, values, strict=True)))  # fmt: skip
    s = read_series(csv)
    assert s.step_seconds == 300 and s.out_of_order == 1
    # The jitter rounds away; the gap's 36 steps, and one after the repeated timestamp
    # (reading 101 is two steps after the latest time before it, reading 99's).
    assert s.put_back == 37 and len(s.values) == n + 37
    assert np.isnan(s.values[[101, *range(301, 337)]]).all()
    assert not np.isnan(s.values[[100, 102, 300, 337]]).any()


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
    rogue = read_series(nab / "realKnownCause__rogue_agent_key_hold.csv")  # gaps of days
    assert rogue.step_seconds == 300 and len(rogue.values) - rogue.put_back == 1882
    machine = read_series(nab / "realKnownCause__machine_temperature_system_failure.csv")
    assert machine.out_of_order == 12 and machine.put_back == 0  # an hour again (line 10151)
    taxi = read_series(nab / "realKnownCause__nyc_taxi.csv")
    assert dominant_period(taxi.values, (8, 256)) == 48  # a day of half hours
    assert dominant_period(taxi.values) == 336  # a week of them stands higher
    assert auto_window(taxi.values) == 336
    daily = np.sin(2 * np.pi * np.arange(750) / 288)[:, None]  # a day of 5 minutes
    assert auto_window(daily) == 187  # at most a quarter of a short series
    assert auto_window(pump(2000)) == 64  # a 24-step cycle: at least 64
    assert auto_window(np.random.default_rng(0).standard_normal((600, 1))) == 128  # no period


# -- the windowed model ------------------------------------------------------------------


def test_manifest_records_the_series(pump_bundle):
    m = EdgeVAE.load(pump_bundle).manifest
    assert m.input_shape == (WINDOW, 5) and m.series.window == WINDOW
    assert m.series.channels == CHANNELS and m.series.timestamp == "timestamp"
    assert m.series.step_seconds == 60 and m.series.alarm_threshold == ALARM_THRESHOLD
    assert len(m.preprocessing.mean) == 5  # per channel, not per window position
    assert not m.is_image and not m.has_complexity
    assert sum(p.stat().st_size for p in pump_bundle.iterdir()) < 1_000_000
    d = m.to_dict()
    d["series"]["window"] = 8
    with pytest.raises(BundleError, match=r"input_shape must be \[window, channels\]"):
        Manifest.from_dict(d)


def fields(batch):
    return (batch.scores, batch.likelihood, batch.is_anomaly, batch.feature_losses)


def assert_same(batches, whole):
    """The batches, joined, equal the whole series' batch bit for bit."""
    parts = zip(*[fields(b) for b in batches], strict=True)
    for got, want in zip(parts, fields(whole), strict=True):
        assert np.array_equal(np.concatenate(got), want)


def test_stream_one_reading_at_a_time_equals_the_whole_series(pump_bundle):
    model = EdgeVAE.load(pump_bundle)
    x = pump(LEARNING + 200, seed=1)
    x[200:203, 3] = np.nan
    x[420, 2] += 30  # a spike the likelihood sees
    for samples in (0, 3):
        whole = model.stream(samples=samples, per_feature=True).push(x)
        assert np.isfinite(whole.scores).all() and whole.feature_losses.shape == (len(x), 5)
        assert (whole.likelihood[: WINDOW - 1 + LEARNING] == 0).all()  # learning
        assert ALARM_THRESHOLD < whole.likelihood[420] <= 1
        # raised at the spike, or held back by an alarm less than a window before it
        assert whole.is_anomaly[420 - WINDOW + 1 : 425].any()
        one = model.stream(samples=samples, per_feature=True)
        batches = [one.push(reading) for reading in x]
        assert all(len(b.scores) == 1 and b.start == i for i, b in enumerate(batches))
        assert_same(batches, whole)
        chunks = model.stream(samples=samples, per_feature=True)
        assert_same([chunks.push(c) for c in np.array_split(x, [3, 40, 41, 250])], whole)
    whole = model.stream().push(x)
    assert np.array_equal(model.score(x), whole.scores)  # score() of a series: the stream's
    assert np.array_equal(model.predict(x), model.stream().push(x).is_anomaly)


def test_a_reading_scores_as_the_window_ending_at_it(pump_bundle):
    model = EdgeVAE.load(pump_bundle)
    x = pump(100, seed=8)
    windows = np.lib.stride_tricks.sliding_window_view(x, WINDOW, axis=0).transpose(0, 2, 1)
    scores = model.stream(adapt=False).push(x).scores  # a frozen model: the level as read
    np.testing.assert_array_equal(scores[:WINDOW], model.score(x)[:WINDOW])  # not moved yet
    np.testing.assert_array_equal(scores[WINDOW - 1 :], model.score(windows))
    padded = np.concatenate([np.full((WINDOW - 1, 5), np.nan), x[:1]])  # before the W-th
    assert scores[0] == model.score(padded[None])[0]


@settings(max_examples=15, deadline=None)
@given(cut=st.integers(0, LEARNING + 60), seed=st.integers(0, 2**16), spike=st.floats(-1e3, 1e3))
def test_later_readings_never_change_an_earlier_reading(pump_bundle, cut, seed, spike):
    """Causality: whatever comes after reading `cut`, the lines up to it are the same."""
    model = EdgeVAE.load(pump_bundle)
    x = pump(LEARNING + 80, seed=3)
    changed = x.copy()
    rng = np.random.default_rng(seed)
    changed[cut + 1 :] += spike * rng.standard_normal(changed[cut + 1 :].shape)
    changed[cut + 1 :: 7] = np.nan
    a, b = model.stream().push(x), model.stream().push(changed)
    for got, want in zip(fields(a)[:3], fields(b)[:3], strict=True):
        assert np.array_equal(got[: cut + 1], want[: cut + 1])


def test_an_anomaly_scores_high_in_its_channel(pump_bundle):
    model = EdgeVAE.load(pump_bundle)
    x = pump(300, seed=2)
    x[200, 1] += 40 * 50.0  # a spike in flow
    scores = model.score(x)
    assert scores[200:216].min() > np.quantile(scores[:170], 0.99)  # the windows holding it
    losses = model.feature_scores(x)
    assert losses.shape == (300, 5) and np.argmax(losses[205]) == 1
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
    assert not np.allclose(s_gone[60:76], s_zero[60:76])
    assert (model.feature_scores(gone)[60:76, 1:] > 0).all()
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
    assert scorer.report.readings == 1_000_000
    assert peaks[1] <= peaks[0] * 1.05  # no growth from 100k to 1M readings
    one_by_one = model.stream()
    readings = pump(20_000, seed=5)
    tracemalloc.start()
    for i, reading in enumerate(readings):  # the one-reading path keeps a ring of W steps
        one_by_one.push(reading)
        if i == HISTORY + 1000:  # the likelihood's history is full
            early = tracemalloc.get_traced_memory()[0]
    late = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert late <= early + 4096  # what is held after 9,640 readings and after 20,000


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
    assert result["n"] == 499 and result["auroc"] > 0.85  # conv1d: 0.885; the MLP's > 0.9

    detector = VAEDetector(window=WINDOW, epochs=3, contamination=0.05).fit(pump(800))
    assert detector.decision_scores_.shape == (800,)
    assert detector.predict(x).shape == (500,)


# -- the command line ---------------------------------------------------------------------


def test_cli_train_score_stream(tmp_path, pump_bundle):
    csv = write_csv(tmp_path / "p.csv", pump(600), drop=(300,))
    r = run_cli("train", "--data", csv, "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 2 and "is a timestamp: a series?" in r.stderr and "--window" in r.stderr
    r = run_cli("train", "--data", csv, "--out", tmp_path / "run", "--window", "auto",
                "--epochs", "3", "-q")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "windows of 64 steps x 5 channel(s)" in r.stdout  # several channels: 64 steps

    r = run_cli("score", "--model", pump_bundle, csv, "--per-feature", "-o", tmp_path / "s.csv")
    assert r.returncode == 0, r.stderr
    # normal readings: no alarm, or one (a tail of 1 in 1,000 over the 296 it judges)
    assert re.search(r"599 readings, [01] alarms; 1 missing steps put back", r.stderr)
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == ("index,timestamp,score,likelihood,is_anomaly,in_alarm,"
                        + ",".join(f"feature_{c}" for c in CHANNELS))  # fmt: skip
    assert len(lines) == 600 and lines[301].split(",")[:2] == ["300", "2024-01-01 05:01:00"]
    scores = np.array([float(line.split(",")[2]) for line in lines[1:]], np.float32)
    stream = EdgeVAE.load(pump_bundle).stream()
    assert np.array_equal(scores, stream.push_lines(csv.read_text().splitlines()).scores)

    r = run_cli("score", "--model", pump_bundle, csv, "--engine", "ray", "-o", tmp_path / "r")
    assert r.returncode == 2 and "name the column of their ids with --series-id" in r.stderr


def messy_csv(path, n=LEARNING + 120):
    """The pump's readings every minute with what real sensors do: jitter around the
    step, a repeated timestamp, an earlier one, a 3-hour gap, a missing value, a line
    that is not a reading."""
    rng = np.random.default_rng(9)
    seconds = np.arange(n) * 60 + rng.integers(-15, 16, n)
    seconds[200:] += 3 * 3600
    seconds[50] = seconds[49]
    seconds[80] = seconds[79] - 600
    t = np.datetime64("2024-01-01 00:00:00", "s") + seconds.astype("timedelta64[s]")
    values = pump(n, seed=10)
    lines = ["timestamp," + ",".join(CHANNELS)]
    for i in range(n):
        cells = ["" if (i == 120 and j == 2) else repr(float(v)) for j, v in enumerate(values[i])]
        lines.append(str(t[i]).replace("T", " ") + "," + ",".join(cells))
    lines[150] = lines[150].split(",")[0] + ",oops"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_stream_survives_real_timestamps_a_line_per_reading(pump_bundle, tmp_path):
    csv = messy_csv(tmp_path / "messy.csv")
    lines = csv.read_text().splitlines()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vae_edge.cli", "score", "--model", str(pump_bundle), "-", "--stream"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        proc.stdin.write(lines[0] + "\n" + lines[1] + "\n")  # the header and one reading
        proc.stdin.flush()
        out = [proc.stdout.readline() for _ in range(2)]  # answered at once
        assert out[0] == "index,timestamp,score,likelihood,is_anomaly,in_alarm\n"
        assert out[1].startswith("0," + lines[1].split(",")[0] + ",")
        for line in lines[2:]:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            out.append(proc.stdout.readline())
            assert out[-1].split(",")[1] == line.split(",")[0]  # in turn, timestamp as given
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0 and proc.stdout.read() == ""  # nothing held back for EOF
    report = proc.stderr.read()
    assert (f"{len(lines) - 1} readings" in report and "2 repeated or earlier timestamps" in report
            and "1 unreadable lines" in report and "2 readings with missing values" in report
            and int(report.split(" missing steps put back")[0].split()[-1]) >= 180), report  # fmt: skip
    r = run_cli("score", "--model", pump_bundle, csv, "-o", tmp_path / "whole.csv")
    assert r.returncode == 0, r.stderr
    whole = (tmp_path / "whole.csv").read_text().splitlines()
    assert whole == [line.rstrip("\n") for line in out]  # a line per reading, as streamed
    likelihood = np.array([float(line.split(",")[3]) for line in whole[1:]])
    assert likelihood.max() > 0 and (likelihood <= 1).all()


def test_cli_calibrate_and_evaluate_with_labels(pump_bundle, tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(pump_bundle, bundle)
    x = np.hstack([pump(LEARNING + 200, seed=6), np.ones((LEARNING + 200, 1))])
    csv = write_csv(tmp_path / "p.csv", x, names=["a", *CHANNELS[1:], "extra"])
    r = run_cli("calibrate", "--model", bundle, "--data", csv)  # not the model's columns
    assert r.returncode != 0 and "choose with --columns" in r.stderr
    r = run_cli("calibrate", "--model", bundle, "--data", csv, "--columns",
                ",".join(["a", *CHANNELS[1:]]), "--timestamp", "timestamp")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"alarm threshold {ALARM_THRESHOLD:g} on the likelihood (unchanged)" in r.stdout
    r = run_cli("calibrate", "--model", bundle, "--data", csv, "--columns",
                ",".join(["a", *CHANNELS[1:]]), "--quantile", "0.9")  # fmt: skip
    assert r.returncode == 0 and "quantile 0.9 of" in r.stdout, r.stderr
    assert 0 < EdgeVAE.load(bundle).manifest.series.alarm_threshold < 1
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


def test_a_stream_never_refuses_a_line(pump_bundle):
    stream = EdgeVAE.load(pump_bundle).stream()
    header = "timestamp," + ",".join(CHANNELS)
    good = "2024-01-01 00:00:00," + ",".join(["1.0"] * 5)
    lines = [header, good, "not a time," + ",".join(["1.0"] * 5), "2024-01-01 00:01:00,1.0",
             good.replace("00:00:00", "00:03:00").replace("1.0", "x", 1), ""]  # fmt: skip
    out = [stream.push_line(line) for line in lines]
    assert out[0] is None and out[-1] is None and all(b is not None for b in out[1:-1])
    assert [b.timestamps[0] for b in out[1:-1]] == [
        "2024-01-01 00:00:00",
        "not a time",
        "2024-01-01 00:01:00",
        "2024-01-01 00:03:00",
    ]
    r = stream.report  # the line without a time took the step 00:01, so 00:01 is a repeat
    assert (r.readings, r.unreadable, r.missing, r.out_of_order, r.put_back) == (4, 3, 2, 1, 1)
    assert all(np.isfinite(b.scores).all() for b in out[1:-1])


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_csv_delimiters_are_recognised_or_named(pump_bundle, tmp_path, delimiter):
    """A logger's semicolons or tabs (SKAB's files are ;-separated) read as commas do; a
    delimiter named wrongly is an error that says what the line holds."""
    values = pump(400, seed=4)
    comma = write_csv(tmp_path / "comma.csv", values)
    other = tmp_path / "other.csv"
    other.write_text(comma.read_text().replace(",", delimiter))
    a, b = read_series(comma), read_series(other)
    assert np.array_equal(a.values, b.values) and a.channels == b.channels == CHANNELS
    assert np.array_equal(a.timestamps, b.timestamps)
    r1 = run_cli("score", "--model", pump_bundle, comma)
    r2 = run_cli("score", "--model", pump_bundle, other)
    assert r1.returncode == r2.returncode == 0 and r1.stdout == r2.stdout, r2.stderr
    name = {";": ";", "\t": "tab"}[delimiter]
    r3 = run_cli("score", "--model", pump_bundle, other, "--delimiter", name)
    assert r3.returncode == 0 and r3.stdout == r1.stdout
    r4 = run_cli("score", "--model", pump_bundle, other, "--delimiter", ",")
    assert r4.returncode == 2 and "1 value column(s)" in r4.stderr
    assert f"the line also holds {';' if delimiter == ';' else 'tab'}" in r4.stderr.replace(
        "';'", ";"
    )
    assert "--delimiter" in r4.stderr and r4.stderr.count("\n") == 1
    stream = EdgeVAE.load(pump_bundle).stream()
    lines = other.read_text().splitlines()
    got = [stream.push_line(line) for line in lines]
    assert stream.report.unreadable == 0 and sum(b is not None for b in got) == 400


def test_decimal_commas_in_a_semicolon_file_are_named(tmp_path):
    path = tmp_path / "eu.csv"
    path.write_text("timestamp;a;b\n2024-01-01 00:00:00;1,5;2\n2024-01-01 00:01:00;1,5;2\n")
    with pytest.raises(InputError, match=r"'1,5' is not a number \(columns split at ';'"):
        read_series(path)


# -- a stream that keeps learning ------------------------------------------------------


def test_after_a_level_shift_alarms_stop_and_a_later_spike_still_alarms(pump_bundle):
    """A permanent level shift: one alarm at the shift, held (in_alarm) at most ACCEPT + 1
    windows, then taken as the new normal: no alarm in the rest of the stream but a spike's,
    and the adapted model's scores back near the ones before the shift; a frozen model's
    stay high."""
    from vae_edge.runtime.series import ACCEPT

    model = EdgeVAE.load(pump_bundle)
    shift_at, spike_at = WINDOW - 1 + LEARNING + 200, WINDOW - 1 + LEARNING + 1400
    x = pump(spike_at + 100, seed=4)
    x[shift_at:] += 2.0 * np.array([1.0, 50.0, 0.1, 3.0, 1e3])  # twice each channel's swing
    x[spike_at, 3] += 30.0
    out = model.stream().push(x)
    alarms = np.flatnonzero(out.is_anomaly)
    alarms = alarms[alarms >= shift_at]  # (a normal reading may alarm before: not the point)
    assert alarms[0] < shift_at + WINDOW  # the shift is raised at once
    held = np.flatnonzero(out.in_alarm[shift_at:spike_at]) + shift_at
    assert held[0] == alarms[0] and held[-1] < alarms[0] + (ACCEPT + 1) * WINDOW
    settled = alarms[0] + (ACCEPT + 1) * WINDOW  # held, then re-based at a window's end
    assert list(alarms[alarms >= shift_at + WINDOW]) == [spike_at]  # the spike, and only it
    assert out.in_alarm[spike_at]
    before = np.median(out.scores[LEARNING:shift_at])
    after = out.scores[int(settled) : spike_at]
    assert np.median(after) < 2 * before
    chunked = model.stream()  # the re-base falls inside a chunk: the same numbers
    parts = [chunked.push(c) for c in np.array_split(x, 7)]
    for name in ("scores", "likelihood", "is_anomaly", "in_alarm"):
        got = np.concatenate([getattr(b, name) for b in parts])
        np.testing.assert_array_equal(got, getattr(out, name))
    frozen = model.stream(adapt=False).push(x)
    assert np.median(frozen.scores[int(settled) : spike_at]) > 10 * before


def test_a_reading_beyond_the_range_seen_is_anomalous(pump_bundle):
    """numenta's spatial check: a reading beyond [min - 5%, max + 5%] of the readings so
    far has likelihood 1 once the likelihood speaks, whatever the model's loss; without
    the check the same reading is judged by its loss alone."""
    from vae_edge.runtime.series import StreamRules

    model = EdgeVAE.load(pump_bundle)
    at = 24 * 20 + 6  # at the cycle's peak, where the model expects the highest readings
    x = pump(at + 50, seed=6)
    seen = model.manifest.series
    x[at, 0] = seen.high[0] + 0.06 * (seen.high[0] - seen.low[0])
    settings = model.settings()
    streams = [
        SeriesStream(model, settings),
        SeriesStream(model, settings, rules=StreamRules(spatial=None)),
    ]
    for stream in streams:  # tails that never end: a likelihood of 1 is the check's alone
        stream.likelihood = AnomalyLikelihood(quiet=WINDOW, bounded=False)
    checked, unchecked = (stream.push(x) for stream in streams)
    assert checked.likelihood[at] == 1.0
    assert unchecked.likelihood[at] < 1.0
    np.testing.assert_array_equal(checked.likelihood[:at], unchecked.likelihood[:at])


def test_cli_frozen_in_alarm_and_options_by_kind(pump_bundle, tmp_path):
    """--frozen streams the level as read; each option is refused, in one line, by an input
    it is not for; train's data is DATA or --data, once; --engine ray needs --series-id."""
    x = pump(LEARNING + 300, seed=9)
    x[LEARNING + 100 :] += 2.0 * np.array([1.0, 50.0, 0.1, 3.0, 1e3])  # a lasting shift
    csv = write_csv(tmp_path / "shift.csv", x)
    out = {}
    for flag in ((), ("--frozen",)):
        r = run_cli("score", "--model", pump_bundle, csv, *flag)
        assert r.returncode == 0, r.stderr
        rows = [line.split(",") for line in r.stdout.splitlines()[1:]]
        out[flag] = np.array([[float(v) for v in row[2:]] for row in rows])  # score ... in_alarm
    learnt, frozen = out[()], out[("--frozen",)]
    assert learnt[:, 3].any() and learnt[-100:, 3].sum() == 0  # held, then learnt
    assert np.median(frozen[-100:, 0]) > 10 * np.median(learnt[-100:, 0])
    tiny = tmp_path / "t.npy"
    np.save(tiny, np.zeros((4, 784), np.uint8))
    for args, message in [
        (("score", tiny, "--frozen"), "--frozen is not for a table's or images' rows; it is "
                                      "for a windowed model's series"),
        (("score", "--model", pump_bundle, csv, "--keep", "id"), "--keep is not for a "
                                                                 "windowed model's series"),
        (("train", csv, "--data", csv, "--out", tmp_path / "r"), "give the training data once"),
        (("train", csv, "--out", tmp_path / "r", "--engine", "ray"), "name the column of its "
                                                                     "series ids"),
        (("train", csv, "--out", tmp_path / "r", "--series-id", "m"), "--series-id needs "
                                                                      "--engine ray"),
    ]:  # fmt: skip
        r = run_cli(*args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
