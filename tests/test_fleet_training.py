"""A fleet trained on Ray (`vae-edge train --engine ray --series-id`, vae_edge.ray_data.
train): a bundle per series id, each the one `train --window` makes from that series
alone, scored by `score --engine ray`. The CLI starts its own Ray, twice: no module Ray."""

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from conftest import run_cli
from test_fleet import SERIES, assert_as_local, by_series, fleet, fleet_parquet, local  # noqa: F401


def test_a_fleet_trained_on_ray_equals_each_series_trained_alone(fleet_parquet, tmp_path):  # noqa: F811
    """`train --engine ray --series-id`: a bundle per series id, each the one `train
    --window` makes from that series alone (same seed, one thread): the same scores. A
    series that cannot be trained is named and the others kept; `score --engine ray`
    reads the folder."""
    fleet_dir = tmp_path / "fleet"
    shutil.copytree(fleet_parquet, fleet_dir)
    short = pa.table({"machine": ["stub"] * 3, "ts": np.array(["2025-03-01T00:00:00"] * 3,
                      "datetime64[s]"), "0": [1.0, 2.0, 3.0], "1": [0.0, 0.0, 0.0]})  # fmt: skip
    pq.write_table(short, fleet_dir / "part-2.parquet")
    models = tmp_path / "models"
    r = run_cli("train", fleet_dir, "--engine", "ray", "--series-id", "machine", "--out", models,
                "--window", "16", "--epochs", "2")  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "series 'stub' not trained: series 'stub': 3 readings are too few" in r.stderr
    assert "Traceback" not in r.stderr and "trained 4 of 5 series" in r.stdout
    assert sorted(p.name for p in models.iterdir()) == sorted(SERIES)

    name = "pump-a"
    x, t = fleet()[name]
    lines = ["ts,0,1"] + [f"{str(s).replace('T', ' ')},{'' if np.isnan(a) else repr(float(a))},"
                          f"{'' if np.isnan(b) else repr(float(b))}" for s, (a, b) in zip(t, x, strict=True)]  # fmt: skip
    (tmp_path / "alone.csv").write_text("\n".join(lines) + "\n")
    r = run_cli("train", "--data", tmp_path / "alone.csv", "--out", tmp_path / "run", "--window",
                "16", "--epochs", "2", "--timestamp", "ts", "-q")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert run_cli("export", tmp_path / "run", "--out", tmp_path / "alone").returncode == 0
    alone = local(tmp_path / "alone", x, t)
    np.testing.assert_array_equal(local(models / name, x, t).scores, alone.scores)
    assert (tmp_path / "alone" / "encoder.onnx").read_bytes() == (
        models / name / "encoder.onnx").read_bytes()  # fmt: skip

    r = run_cli("score", "--model", models, fleet_parquet, "--engine", "ray", "--series-id",
                "machine", "-o", tmp_path / "scored")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert_as_local(by_series(tmp_path / "scored")[name], alone)
