"""A fleet's series on Ray (vae_edge.ray_data.score_fleet, `vae-edge score --engine ray
--series-id`): each series scored in order, with the numbers of EdgeVAE.stream() on that
series alone, bit for bit; one model for all or one per series id; every reading once
with a worker killed."""

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TINY_SERIES_BUNDLE, pids_running, run_cli

from vae_edge.ray_data import INDEX, read_parquet, score_fleet, write_parquet
from vae_edge.runtime import EdgeVAE, InputError

STEP = 60
SERIES = {"pump-a": 900, "pump-b": 650, "fan-7": 1200, "9": 300}


pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The tiny two-channel series bundle, told that its readings come every minute in a
    column `ts` (the manifest is not covered by the graphs' checksums)."""
    folder = tmp_path_factory.mktemp("bundle") / "tiny"
    shutil.copytree(TINY_SERIES_BUNDLE, folder)
    manifest = json.loads((folder / "vae.json").read_text())
    manifest["series"] |= {"timestamp": "ts", "step_seconds": STEP}
    (folder / "vae.json").write_text(json.dumps(manifest))
    return folder


def fleet() -> dict:
    """Each series' values (T, 2) and timestamps: jittered, with a gap and a repeat."""
    rng = np.random.default_rng(3)
    out = {}
    for k, (name, n) in enumerate(SERIES.items()):
        t = np.arange(n) * STEP + rng.integers(-10, 10, n)
        t[n // 2 :] += 7 * STEP  # a gap: steps put back
        t[n // 3] = t[n // 3 - 1]  # a repeated timestamp
        x = np.sin(np.arange(n)[:, None] / (5 + k) + [0, 1]) + 0.1 * rng.standard_normal((n, 2))
        x[n // 4 : n // 4 + 20] += 4  # something to alarm on
        x[n // 5, 1] = np.nan
        out[name] = (x, np.datetime64("2025-03-01T00:00:00") + t.astype("timedelta64[s]"))
    return out


@pytest.fixture(scope="module")
def fleet_parquet(tmp_path_factory) -> Path:
    """The fleet's readings interleaved across two files, as a logger writes them."""
    folder = tmp_path_factory.mktemp("fleet")
    rows = [(name, i) for name, (x, _) in fleet().items() for i in range(len(x))]
    order = np.argsort([i for _, i in rows], kind="stable")  # interleave by reading number
    data = fleet()
    cols = {"machine": [], "ts": [], "0": [], "1": []}
    for j in order:
        name, i = rows[j]
        x, t = data[name]
        cols["machine"].append(name)
        cols["ts"].append(t[i])
        cols["0"].append(x[i, 0])
        cols["1"].append(x[i, 1])
    table = pa.table({"machine": cols["machine"], "ts": np.array(cols["ts"]),
                      "0": cols["0"], "1": cols["1"]})  # fmt: skip
    half = len(table) // 2
    pq.write_table(table.slice(0, half), folder / "part-0.parquet", row_group_size=500)
    pq.write_table(table.slice(half), folder / "part-1.parquet", row_group_size=500)
    return folder


def by_series(folder: Path) -> dict:
    table = pq.read_table(folder).to_pandas()
    return {name: group.sort_values(INDEX) for name, group in table.groupby("machine")}


def local(model_dir: Path, x, t):
    return EdgeVAE.load(model_dir).stream().push(x, t)


def assert_as_local(got, expected) -> None:
    np.testing.assert_array_equal(got[INDEX].to_numpy(), np.arange(len(expected.scores)))
    np.testing.assert_array_equal(got["score"].to_numpy(), expected.scores)
    np.testing.assert_array_equal(got["likelihood"].to_numpy(), expected.likelihood)
    np.testing.assert_array_equal(got["is_anomaly"].to_numpy(), expected.is_anomaly)


def test_a_fleet_on_ray_equals_each_series_streamed_alone(fleet_parquet, bundle, tmp_path):
    scored = score_fleet(read_parquet(fleet_parquet), bundle, "machine")
    assert write_parquet(scored, tmp_path / "out") == sum(SERIES.values())
    out = by_series(tmp_path / "out")
    assert sorted(out) == sorted(SERIES)
    alarms = 0
    for name, (x, t) in fleet().items():
        expected = local(bundle, x, t)
        assert_as_local(out[name], expected)
        np.testing.assert_array_equal(out[name]["ts"].to_numpy(), t)  # as given
        alarms += expected.is_anomaly.sum()
    assert alarms  # the comparison covers alarms, not only quiet readings


def test_a_model_per_series_id(fleet_parquet, bundle, tmp_path):
    models = tmp_path / "models"
    for k, name in enumerate(SERIES):
        shutil.copytree(bundle, models / name)
        manifest = json.loads((models / name / "vae.json").read_text())
        manifest["series"]["alarm_threshold"] = 0.1 * (k + 1)  # a different alarm each
        (models / name / "vae.json").write_text(json.dumps(manifest))
    r = run_cli("score", "--model", models, fleet_parquet, "--engine", "ray", "--series-id",
                "machine", "--actors", "2", "-o", tmp_path / "out")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = by_series(tmp_path / "out")
    for name, (x, t) in fleet().items():
        assert_as_local(out[name], local(models / name, x, t))
    shutil.rmtree(models / "fan-7")
    r = run_cli("score", "--model", models, fleet_parquet, "--engine", "ray", "--series-id",
                "machine", "-o", tmp_path / "o2")  # fmt: skip
    assert r.returncode == 2 and "series 'fan-7': no bundle" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o2").exists()


def test_fleet_refusals(fleet_parquet, bundle, tmp_path):
    for args, message in (
        (["--series-id", "nope"], "no column 'nope' in the input"),
        ([], "name the column of their ids with --series-id"),
        (["--series-id", "machine", "--keep", "ts"], "--keep is not for a fleet on Ray"),
    ):
        r = run_cli("score", "--model", bundle, fleet_parquet, "--engine", "ray", *args,
                    "-o", tmp_path / "o")  # fmt: skip
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
    r = run_cli("score", "--model", bundle, fleet_parquet, "--series-id", "machine")
    assert r.returncode == 2 and "--series-id is not for a windowed model's series" in r.stderr
    with pytest.raises(InputError, match="neither a bundle nor a folder of bundles"):
        score_fleet(read_parquet(fleet_parquet), tmp_path, "machine")


def test_every_reading_once_when_a_worker_is_killed(bundle, tmp_path):
    n_series, n = 40, 3000
    rng = np.random.default_rng(9)
    x = rng.standard_normal((n_series * n, 2))
    ids = np.repeat(np.arange(n_series), n)
    t = np.datetime64("2025-01-01") + np.tile(np.arange(n) * STEP, n_series).astype(
        "timedelta64[s]"
    )
    folder = tmp_path / "big"
    folder.mkdir()
    pq.write_table(pa.table({"machine": ids, "ts": t, "0": x[:, 0], "1": x[:, 1]}),
                   folder / "a.parquet", row_group_size=5000)  # fmt: skip
    killed = []

    def kill_one_worker():
        deadline = time.time() + 200
        while time.time() < deadline and not killed:
            pids = pids_running(b"score_series_group")
            if pids:
                time.sleep(0.5)
                try:
                    os.kill(pids[0], signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append(time.time())
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    scored = score_fleet(read_parquet(folder), bundle, "machine", tasks=2)
    assert write_parquet(scored, tmp_path / "out") == n_series * n
    finished = time.time()
    killer.join(timeout=1)
    assert killed and killed[0] < finished, "no worker was killed during the run"
    out = by_series(tmp_path / "out")
    model = EdgeVAE.load(bundle)
    for k in range(n_series):
        expected = model.stream().push(x[ids == k], t[ids == k])
        assert_as_local(out[k], expected)  # every reading once, the numbers of a quiet run
