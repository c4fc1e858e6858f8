"""Training: defaults from the data, reproducibility, one-class runs, MNIST loading."""

import gzip
import hashlib
import http.server
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vae_edge.runtime.errors import InputError
from vae_edge.training import mnist
from vae_edge.training.train import choose_likelihood, load_run, train


def test_defaults_follow_the_data():
    grey = np.array([[0, 7, 255, 1], [3, 0, 0, 9], [1, 1, 0, 0]], np.uint8)
    assert choose_likelihood(grey)[1].scale == pytest.approx(1 / 255)
    unit = np.random.default_rng(0).random((3, 4, 4))
    likelihood, prep = choose_likelihood(unit)  # images in [0, 1]
    assert likelihood == "bernoulli" and prep.kind == "scale" and prep.scale == 1.0
    assert choose_likelihood(unit.reshape(3, 16))[0] == "gaussian"  # a table in [0, 1]
    assert choose_likelihood(np.array([[0.0, 1.0], [1.0, 1.0]]))[0] == "bernoulli"  # 0/1
    x = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, -2.0]])
    likelihood, prep = choose_likelihood(x)
    assert likelihood == "gaussian" and prep.kind == "standardize"
    assert prep.mean == [2.0, 5.0, 0.0] and prep.std == [1.0, 1.0, 2.0]  # constant column: 1
    with pytest.raises(InputError, match="bernoulli likelihood needs"):
        choose_likelihood(x, "bernoulli")


def test_training_is_reproducible_for_a_seed(tmp_path):
    x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train(str(tmp_path / "x.npy"), tmp_path / name, epochs=2, seed=seed, progress=False)
        runs.append(torch.load(tmp_path / name / "checkpoint.pt", weights_only=True))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_run_directory_holds_config_log_and_checkpoint(mnist_run):
    config = json.loads((mnist_run / "config.json").read_text())
    assert config["format"] == "vae-edge-run/1"
    assert config["model"] == {
        "arch": "mlp", "input_shape": [28, 28], "hidden": [128], "latent_dim": 8, "likelihood": "bernoulli",
        "variance": "fixed",
    }  # fmt: skip
    assert config["preprocessing"] == {"kind": "scale", "scale": 1 / 255}
    assert config["data"]["n_train"] == 2700 and config["data"]["n_val"] == 300
    log = [json.loads(line) for line in (mnist_run / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]
    assert all({"train_loss", "val_loss", "val_recon", "val_kl"} <= e.keys() for e in log)
    assert log[1]["val_loss"] < log[0]["val_loss"]
    s = config["summary"]
    assert s["test_loss"] == pytest.approx(s["test_recon"] + s["test_kl"])
    assert 80 < s["test_loss"] < 250


def test_normal_class_trains_on_one_label(mnist_small, tmp_path):
    config = train(
        str(mnist_small), tmp_path / "run", epochs=1, normal_class=3, hidden=(32,), progress=False
    )
    with np.load(mnist_small) as f:
        n3 = int((f["y_train"] == 3).sum())
    assert config.data["n_train"] + config.data["n_val"] == n3
    assert config.data["normal_class"] == 3
    with pytest.raises(InputError, match="no samples with label 11"):
        train(str(mnist_small), tmp_path / "r2", epochs=1, normal_class=11, progress=False)


def test_training_refuses_bad_data(tmp_path):
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(InputError, match="NaN"):
        train(str(tmp_path / "nan.npy"), tmp_path / "r", progress=False)
    np.save(tmp_path / "flat.npy", np.arange(10.0))
    with pytest.raises(InputError, match="samples must be"):
        train(str(tmp_path / "flat.npy"), tmp_path / "r", progress=False)
    np.save(tmp_path / "y.npy", np.zeros((5, 2)))
    with pytest.raises(InputError, match="needs labels"):
        train(str(tmp_path / "y.npy"), tmp_path / "r", normal_class=1, progress=False)


def test_checkpoints_load_weights_only(mnist_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(mnist_run, run)
    model, _ = load_run(run)
    assert isinstance(model, torch.nn.Module)
    torch.save({"payload": _NotAWeight()}, run / "checkpoint.pt")  # a pickled object
    with pytest.raises(InputError, match="cannot load weights"):
        load_run(run)


class _NotAWeight:
    pass


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_server(tmp_path):
    """Four small IDX files served over HTTP on 127.0.0.1; yields (url, checksums, arrays)."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 20),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5),
    }
    served = tmp_path / "served"
    served.mkdir()
    checksums = {}
    for name, array in arrays.items():
        blob = _idx(array)
        (served / f"{name}.gz").write_bytes(blob)
        checksums[name] = hashlib.sha256(blob).hexdigest()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", checksums, arrays
    finally:
        server.shutdown()
        server.server_close()


def test_mnist_downloads_checks_sha256_and_caches(mnist_server, tmp_path, monkeypatch):
    url, checksums, arrays = mnist_server
    monkeypatch.delenv("VAE_EDGE_DATA", raising=False)
    monkeypatch.setenv("VAE_EDGE_CACHE", str(tmp_path / "cache"))
    data = mnist.load_mnist(mirror=url, checksums=checksums)
    assert np.array_equal(data.x, arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(
        f"{n}.gz" for n in checksums
    )
    # Cached: works with the server unreachable.
    again = mnist.load_mnist(mirror="http://127.0.0.1:9/", checksums=checksums)
    assert np.array_equal(again.x_test, data.x_test)


def test_mnist_download_with_wrong_checksum_keeps_nothing(mnist_server, tmp_path, monkeypatch):
    url, checksums, _ = mnist_server
    monkeypatch.delenv("VAE_EDGE_DATA", raising=False)
    monkeypatch.setenv("VAE_EDGE_CACHE", str(tmp_path / "cache"))
    bad = dict(checksums, **{"train-images-idx3-ubyte": "0" * 64})
    with pytest.raises(InputError, match="sha256 does not match"):
        mnist.load_mnist(mirror=url, checksums=bad)
    assert not (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not list((tmp_path / "cache" / "mnist").glob("*tmp*"))


def test_mnist_from_idx_files_in_vae_edge_data(mnist_server, tmp_path, monkeypatch):
    _, checksums, arrays = mnist_server
    folder = tmp_path / "idx"
    folder.mkdir()
    for name, array in arrays.items():
        (folder / name).write_bytes(gzip.decompress(_idx(array)))  # uncompressed IDX
    monkeypatch.setenv("VAE_EDGE_DATA", str(folder))
    data = mnist.load_mnist(mirror="http://127.0.0.1:9/", checksums=checksums)
    assert np.array_equal(data.x_test, arrays["t10k-images-idx3-ubyte"])


def test_truncated_idx_file(tmp_path):
    blob = gzip.decompress(_idx(np.zeros((4, 28, 28))))
    (tmp_path / "f").write_bytes(blob[:-100])
    with pytest.raises(InputError, match="truncated"):
        mnist.read_idx(tmp_path / "f")


def test_zero_epochs_is_refused_not_replaced_by_the_default(tmp_path):
    from vae_edge.training.train import fit

    with pytest.raises(InputError, match="epochs must be >= 1, got 0"):
        fit(np.zeros((10, 3), np.float32), epochs=0)


def test_early_stopping_keeps_the_best_epoch(mnist_small):
    from vae_edge.training.train import evaluate, fit

    with np.load(mnist_small) as f:
        x = f["x_train"][:200]
    log = []
    model, config = fit(x, epochs=60, batch_size=16, patience=2, kl_warmup=0, hidden=(64,),
                        latent_dim=4, on_epoch=lambda entry, epochs: log.append(entry))  # fmt: skip
    s = config.summary
    val = [e["val_loss"] for e in log]
    assert s["epochs_run"] == len(log) < 60  # stopped early: 180 digits stop improving
    assert s["epoch"] == 1 + int(np.argmin(val)) == len(log) - 2
    assert s["val_loss"] == min(val)
    # The returned weights are the best epoch's, not the last one's.
    order = np.random.default_rng(0).permutation(len(x))
    x_val = torch.from_numpy(x[order[:20]].astype(np.float32) / 255)
    assert evaluate(model, x_val, 0)["loss"] == pytest.approx(min(val), rel=1e-6)


def test_beta_and_kl_warmup_shape_the_loss(mnist_small):
    from vae_edge.training.train import fit

    with np.load(mnist_small) as f:
        x = f["x_train"][:1000]
    kl = {}
    for beta in (0.25, 4.0):
        _, config = fit(x, epochs=3, beta=beta, hidden=(64,), latent_dim=8)
        kl[beta] = config.summary["val_kl"]
        assert config.training["beta"] == beta and config.training["kl_warmup"] == 0.3
    assert kl[4.0] < kl[0.25] / 2  # a heavier KL term buys a smaller KL
    with pytest.raises(InputError, match="beta must be positive"):
        fit(x, beta=0)
    with pytest.raises(InputError, match="patience must be >= 1"):
        fit(x, patience=0)


def test_conv_arch_needs_images(tmp_path):
    from vae_edge.training.train import fit

    with pytest.raises(InputError, match=r"conv arch needs images .* got \(6,\)"):
        fit(np.zeros((10, 6), np.float32), arch="conv")
    with pytest.raises(InputError, match="unknown arch 'cnn'"):
        fit(np.zeros((10, 6), np.float32), arch="cnn")


def test_default_length_and_size_for_images_and_tables():
    from vae_edge.training.train import default_architecture, default_epochs

    assert default_epochs(54_000, 128, image=True) == 24  # 10,000 steps
    assert default_epochs(54_000, 128) == 10
    assert default_epochs(1_000, 128) == 500  # 4,000 steps
    assert default_epochs(1_000, 128, min_steps=500) == 63
    assert default_architecture((28, 28)) == ((512, 256), 32)
    assert default_architecture((21,)) == ((64,), 10)


def test_trimmed_loss_ignores_the_highest_loss_samples():
    from vae_edge.training.model import VAE
    from vae_edge.training.train import train_step

    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.normal(size=(8, 5)).astype(np.float32))

    def step_with_outliers(scale, trim):
        """Parameters after one step on the batch with its last two rows times `scale`."""
        torch.manual_seed(0)
        model = VAE((5,), (16,), 2, learn_variance=True)
        xb = batch.clone()
        xb[-2:] *= scale
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        train_step(model, xb, 1.0, optimizer, torch.Generator().manual_seed(1), trim)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    # Trimming a quarter of 8 rows leaves the two outliers out: how far off they are
    # does not change the step; without trimming it does.
    assert torch.equal(step_with_outliers(50.0, 0.25), step_with_outliers(500.0, 0.25))
    assert not torch.equal(step_with_outliers(50.0, 0.0), step_with_outliers(500.0, 0.0))


def test_trim_defaults_to_tables_only_and_is_checked(mnist_small):
    from vae_edge.training.train import TRIM, fit

    table = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    assert fit(table, epochs=1)[1].training["trim"] == TRIM > 0
    assert fit(table, epochs=1, trim=0.1)[1].training["trim"] == 0.1
    with np.load(mnist_small) as f:
        images = f["x_train"][:100]
    assert fit(images, epochs=1, hidden=(16,), latent_dim=2)[1].training["trim"] == 0
    for bad in (1.0, -0.1):
        with pytest.raises(InputError, match=f"trim must be in \\[0, 1\\), got {bad}"):
            fit(table, trim=bad)


def test_vae_detector_follows_the_pyod_convention(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from make_tiny_bundle import tiny_table

    from vae_edge.runtime import EdgeVAE
    from vae_edge.runtime.anomaly import roc_auc
    from vae_edge.training import VAEDetector

    normal = tiny_table(1000, seed=1)
    outliers = np.random.default_rng(2).uniform(-8, 8, (50, 6)).astype(np.float32)
    x, y = np.concatenate([normal, outliers]), np.r_[np.zeros(1000), np.ones(50)]
    detector = VAEDetector(contamination=0.05, epochs=20, bundle_dir=tmp_path / "bundle")
    with pytest.raises(RuntimeError, match="not fitted yet"):
        detector.predict(x)
    assert detector.fit(x) is detector
    assert detector.decision_scores_.shape == (1050,)
    assert detector.threshold_ == pytest.approx(np.quantile(detector.decision_scores_, 0.95))
    assert set(np.unique(detector.labels_)) == {0, 1} and detector.labels_.mean() == pytest.approx(
        0.05, abs=0.002
    )
    assert roc_auc(y, detector.decision_scores_) > 0.95  # the outliers are far off
    # The bundle it leaves is a normal bundle with the threshold: the CLI and runtime agree.
    model = EdgeVAE.load(tmp_path / "bundle")
    assert model.threshold == detector.threshold_
    np.testing.assert_array_equal(detector.decision_function(x[:7]), model.score(x[:7]))
    np.testing.assert_array_equal(detector.predict(x), model.predict(x).astype(int))
    assert detector.predict(x).dtype.kind == "i"
    params = detector.get_params()
    assert params["contamination"] == 0.05 and params["epochs"] == 20
    clone = VAEDetector(**params)
    assert clone.get_params() == params
    assert clone.set_params(seed=3).seed == 3
    with pytest.raises(ValueError, match="no parameter 'depth'"):
        clone.set_params(depth=2)
    assert repr(VAEDetector(contamination=0.2)) == "VAEDetector(contamination=0.2)"


def _blobs(n: int, seed: int = 0) -> np.ndarray:
    """Binary 12 x 12 images: a filled square at a random place."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 12, 12), np.uint8)
    for image, (top, left, side) in zip(x, rng.integers((0, 0, 3), (6, 6, 7), (n, 3)), strict=True):
        image[top : top + side, left : left + side] = 1
    return x


def test_which_data_gets_which_model():
    """The README's rule (Which data gets which model), case by case."""
    binary = _blobs(5)
    for x in (binary, binary.astype(np.float32), binary.astype(bool).astype(np.int64)):
        likelihood, prep = choose_likelihood(x)
        assert likelihood == "bernoulli" and prep.scale == 1.0, x.dtype  # 0/1: floor 0
    assert choose_likelihood(binary.reshape(5, -1))[1].scale == 1.0  # a 0/1 table too
    grey = np.random.default_rng(0).integers(0, 256, (5, 6, 6))
    for x in (grey.astype(np.uint8), grey.astype(np.float32), grey.astype(np.int64)):
        likelihood, prep = choose_likelihood(x)
        assert likelihood == "bernoulli" and prep.scale == pytest.approx(1 / 255), x.dtype
    assert choose_likelihood(grey.reshape(5, -1).astype(np.float32))[0] == "gaussian"  # table
    assert choose_likelihood(grey + 0.5)[0] == "gaussian"  # not whole numbers
    assert choose_likelihood(grey.astype(np.float32) * 2)[0] == "gaussian"  # beyond 255
    with pytest.raises(InputError, match="grey levels"):
        choose_likelihood(grey * 2.0, "bernoulli")


def test_binary_images_train_the_model_their_0_255_form_does(tmp_path):
    """uint8 0/1 images are binary data: the same model as the pixels stored as 0/255 (the
    same encoder input, floor 0), the same scores on each form, and `sample` writes a
    black-and-white grid; scoring the other form is refused or warned about."""
    from vae_edge.cli import cli
    from vae_edge.export.onnx_export import export_run
    from vae_edge.runtime import EdgeVAE, InputError, InputWarning

    x = _blobs(400)
    models = {}
    for name, data in (("binary", x), ("levels", x * 255), ("float", (x * 255).astype(np.float32))):
        np.save(tmp_path / f"{name}.npy", data)
        train(str(tmp_path / f"{name}.npy"), tmp_path / name, epochs=3, progress=False)
        export_run(tmp_path / name, tmp_path / f"{name}-bundle")
        models[name] = EdgeVAE.load(tmp_path / f"{name}-bundle")
    binary, levels, floats = models["binary"], models["levels"], models["float"]
    assert binary.manifest.binary and not levels.manifest.binary
    assert binary.manifest.preprocessing.scale == 1.0
    assert binary.manifest.default_score == levels.manifest.default_score  # complexity on
    test = _blobs(50, seed=1)
    for a, b in ((binary, levels), (levels, floats)):
        assert a.manifest.encoder.sha256 == b.manifest.encoder.sha256  # the same weights
    np.testing.assert_array_equal(binary.score(test), levels.score(test * 255))
    np.testing.assert_array_equal(levels.score(test * 255), floats.score(test * 255.0))
    np.testing.assert_array_equal(binary.nll_floor(test), 0)
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        binary.score(test * 255)
    with pytest.warns(InputWarning, match="multiply it by 255"):
        levels.score(test)
    result = CliRunner().invoke(cli, ["sample", "--model", str(tmp_path / "binary-bundle"),
                                      "-n", "16", "-o", str(tmp_path / "s.png")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert set(np.unique(np.asarray(Image.open(tmp_path / "s.png")))) == {0, 255}


def test_a_fitted_detector_pickles_and_clones(tmp_path):
    """pickle and joblib round trips of a fitted VAEDetector, alone and inside a
    scikit-learn Pipeline, give identical scores; the bundle's files travel inside the
    pickle, so the copy works with the original gone. clone gives an unfitted copy."""
    import pickle

    import joblib
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    sys.path.insert(0, str(Path(__file__).parent))
    from make_tiny_bundle import tiny_table

    from vae_edge.training import VAEDetector

    x = tiny_table(300, seed=1)
    detector = VAEDetector(contamination=0.05, epochs=3).fit(x)
    pipeline = make_pipeline(FunctionTransformer(), VAEDetector(epochs=3, seed=1)).fit(x)
    scores = detector.decision_function(x)
    pickled = pickle.dumps(detector)
    joblib.dump(pipeline, tmp_path / "pipeline.joblib")
    pipeline_scores = pipeline.decision_function(x)
    del detector, pipeline  # their temporary bundles go with them
    copy = pickle.loads(pickled)
    np.testing.assert_array_equal(copy.decision_function(x), scores)
    np.testing.assert_array_equal(copy.predict(x), (scores > copy.threshold_).astype(int))
    loaded = joblib.load(tmp_path / "pipeline.joblib")
    np.testing.assert_array_equal(loaded.decision_function(x), pipeline_scores)
    unfitted = clone(copy)
    assert unfitted.get_params() == copy.get_params() and not hasattr(unfitted, "model_")
    assert pickle.loads(pickle.dumps(unfitted)).get_params() == copy.get_params()
