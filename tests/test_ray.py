"""Scoring on Ray Data (vae_edge.ray_data, `vae-edge score --engine ray`) on a local Ray:
the same numbers as EdgeVAE.score, every row once with an actor killed, bad files named."""

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from conftest import TINY_BUNDLE, pids_running, run_cli

from vae_edge.ray_data import (
    INDEX,
    BundleScorer,
    read_parquet,
    score_dataset,
    write_parquet,
)
from vae_edge.runtime import EdgeVAE, InputError
from vae_edge.runtime.anomaly import calibrate, write_threshold

ROWS = 3000


pytestmark = pytest.mark.usefixtures("local_ray")


def rows(n: int = ROWS) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((n, 6)).astype(np.float32) * 1.5


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory) -> Path:
    """Three part files, several row groups each; an id column and six features."""
    folder = tmp_path_factory.mktemp("parquet")
    x = rows()
    for part, (lo, hi) in enumerate([(0, 700), (700, 1900), (1900, ROWS)]):
        table = pa.table(
            {"id": np.arange(lo, hi) + 10_000, **{f"f{j}": x[lo:hi, j] for j in range(6)}}
        )
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=400)
    return folder


def read_back(folder: Path):
    table = pq.read_table(folder)
    order = np.argsort(table.column(INDEX).to_numpy())
    return {name: table.column(name).to_numpy()[order] for name in table.column_names}


@pytest.mark.parametrize("samples", [0, 3])
def test_ray_scores_equal_local_scores_bit_for_bit(parquet_dir, tmp_path, samples):
    bundle = tmp_path / "bundle"
    import shutil

    shutil.copytree(TINY_BUNDLE, bundle)
    model = EdgeVAE.load(bundle)
    write_threshold(bundle, calibrate(model, rows(500), quantile=0.9, samples=samples, seed=4))
    model = EdgeVAE.load(bundle)
    settings = model.settings(samples=samples, seed=4, batch_size=128)
    scored = score_dataset(read_parquet(parquet_dir), bundle, settings, keep=("id",), actors=2)
    assert write_parquet(scored, tmp_path / "out") == ROWS
    out = read_back(tmp_path / "out")
    np.testing.assert_array_equal(out[INDEX], np.arange(ROWS))  # every row, once
    np.testing.assert_array_equal(out["id"], np.arange(ROWS) + 10_000)
    expected = model.score(rows(), samples=samples, seed=4)
    np.testing.assert_array_equal(out["score"], expected)
    np.testing.assert_array_equal(out["is_anomaly"], expected > model.threshold)
    assert 0 < out["is_anomaly"].sum() < ROWS


def test_per_feature_losses_and_chosen_columns(parquet_dir, tmp_path):
    model = EdgeVAE.load(TINY_BUNDLE)
    columns = [f"f{j}" for j in range(6)]  # named: id is then neither kept nor a feature
    scored = score_dataset(read_parquet(parquet_dir), TINY_BUNDLE, model.settings(),
                           columns=columns, per_feature=True, actors=1)  # fmt: skip
    write_parquet(scored, tmp_path / "out")
    out = read_back(tmp_path / "out")
    assert "id" not in out
    features = np.stack([out[f"feature_{j}"] for j in range(6)], axis=1)
    np.testing.assert_array_equal(features, model.feature_scores(rows()))


def test_an_image_tensor_column_is_scored_as_images(tmp_path):
    model = EdgeVAE.load()
    digits = model.sample(300, seed=1).round().astype(np.uint8)
    ray.data.from_numpy(digits).write_parquet(str(tmp_path / "digits"))  # one tensor column
    scored = score_dataset(read_parquet(tmp_path / "digits"), None, model.settings(), actors=1)
    write_parquet(scored, tmp_path / "out")
    out = read_back(tmp_path / "out")
    # Ray writes its part files in its own order; the index says which digit each row is.
    table = pq.read_table(sorted((tmp_path / "digits").glob("*.parquet")))
    images = np.stack(table.column("data").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(out["score"], model.score(images.reshape(-1, 28, 28)))


def test_every_row_appears_once_when_an_actor_is_killed(tmp_path):
    n = 40_000
    x = np.random.default_rng(2).standard_normal((n, 6)).astype(np.float32)
    folder = tmp_path / "big"
    folder.mkdir()
    pq.write_table(pa.table({f"f{j}": x[:, j] for j in range(6)}), folder / "a.parquet",
                   row_group_size=500)  # fmt: skip
    model = EdgeVAE.load(TINY_BUNDLE)
    settings = model.settings(samples=16, seed=0, batch_size=256)
    killed = []
    # Actors of earlier tests may still be exiting: only one of this run's is killed.
    earlier = set(pids_running(b"BundleScorer"))

    def kill_one_actor():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            pids = [pid for pid in pids_running(b"BundleScorer") if pid not in earlier]
            if pids:
                time.sleep(1.0)  # let it score a few batches first
                try:
                    os.kill(pids[0], signal.SIGKILL)
                except ProcessLookupError:  # gone meanwhile: look again
                    earlier.add(pids[0])
                    continue
                killed.append((pids[0], time.time()))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    scored = score_dataset(read_parquet(folder), TINY_BUNDLE, settings, actors=2)
    assert write_parquet(scored, tmp_path / "out") == n
    finished = time.time()
    killer.join(timeout=1)
    assert killed and killed[0][1] < finished, "no actor was killed during the run"
    out = read_back(tmp_path / "out")
    np.testing.assert_array_equal(out[INDEX], np.arange(n))  # nothing lost, nothing doubled
    np.testing.assert_array_equal(out["score"], model.score(x, samples=16, seed=0))


def _cut_footer(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:300])


def _scramble_a_page(file: Path) -> None:
    """Garble one column chunk's data page; the footer stays readable, so the file fails
    only when a worker reads that row group."""
    data = bytearray(file.read_bytes())
    start = pq.ParquetFile(file).metadata.row_group(1).column(3).data_page_offset
    for i in range(start + 20, start + 200):
        data[i] ^= 0x5A
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_cut_footer, _scramble_a_page])
def test_a_corrupt_file_is_named_and_no_output_folder_is_left(parquet_dir, tmp_path, corrupt):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(parquet_dir, bad)
    corrupt(bad / "part-1.parquet")
    with pytest.raises(InputError) as e:
        write_parquet(score_dataset(read_parquet(bad), TINY_BUNDLE, actors=1), tmp_path / "out")
    assert str(e.value).startswith(f"{bad / 'part-1.parquet'}: not a readable Parquet file")
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_draws_need_a_row_position(tmp_path):
    dataset = ray.data.from_numpy(rows(10))
    with pytest.raises(InputError, match="needs each row's position in an 'index' column"):
        score_dataset(dataset, TINY_BUNDLE, EdgeVAE.load(TINY_BUNDLE).settings(samples=2))


class _ImportProbe(BundleScorer):
    def __call__(self, batch):
        out = super().__call__(batch)
        out["heavy"] = np.full(len(out["score"]), any(m in sys.modules for m in ("torch", "onnx")))
        return out


def test_workers_import_neither_torch_nor_onnx(parquet_dir):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    settings = EdgeVAE.load(TINY_BUNDLE).settings()
    probed = read_parquet(parquet_dir).map_batches(
        _ImportProbe, fn_constructor_args=(str(TINY_BUNDLE), settings, None, ("id",)),
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1,
    )  # fmt: skip
    heavy = np.concatenate([b["heavy"] for b in probed.iter_batches(batch_format="numpy")])
    assert len(heavy) == ROWS and not heavy.any()


def test_cli_engine_ray_writes_parquet_and_refuses_bad_input(parquet_dir, tmp_path):
    r = run_cli("score", "--model", TINY_BUNDLE, parquet_dir, "--engine", "ray", "--keep", "id",
                "--actors", "1", "-o", tmp_path / "out")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"wrote {tmp_path / 'out'} ({ROWS} rows)" in r.stderr
    out = read_back(tmp_path / "out")
    np.testing.assert_array_equal(out["score"], EdgeVAE.load(TINY_BUNDLE).score(rows()))
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    for args, message in (
        ([parquet_dir, "--engine", "ray", "-o", tmp_path / "out"], "already exists"),
        ([tmp_path / "none", "--engine", "ray", "-o", tmp_path / "o2"], "no Parquet file"),
        (
            [tmp_path / "bad.parquet", "--engine", "ray", "-o", tmp_path / "o2"],
            "bad.parquet: not a readable Parquet file",
        ),
        (
            [parquet_dir, "--keep", "id"],
            "--keep is not for a table's or images' rows; it is for a table on Ray (--engine ray)",
        ),
        ([parquet_dir, "--engine", "ray"], "-o OUT_DIR"),
        (
            [parquet_dir, "--engine", "ray", "--columns", "f0,nope", "-o", tmp_path / "o2"],
            "no column 'nope' in the input",
        ),
        (
            [parquet_dir, "--engine", "ray", "-o", tmp_path / "o2"],  # id taken as a feature
            "this model takes samples of shape (6,)",
        ),
    ):
        r = run_cli("score", "--model", TINY_BUNDLE, *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        if "Parquet" in message:  # found before Ray starts: the one line is all there is
            assert r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "o2").exists()
