"""VAEDetector: vae-edge behind the detector convention of scikit-learn and PyOD.

fit(X) trains a VAE on X (no labels: X may hold anomalies), exports it as a bundle and
scores X with the runtime, exactly as `vae-edge train`, `export`, `calibrate` and `score`
do; decision_function(X) gives the runtime's scores (higher = more anomalous) and
predict(X) 0/1 at threshold_, the 1 - contamination quantile of the training scores.
"""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path

import numpy as np

from vae_edge.export.onnx_export import export_run
from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.anomaly import calibrate, write_threshold
from vae_edge.training.train import LR, PATIENCE, TrainOptions, train


class VAEDetector:
    """Unsupervised anomaly detector (PyOD's interface: fit, decision_function, predict,
    decision_scores_, threshold_, labels_). Training options as for `vae-edge train`;
    None = chosen from the data; score_type, samples and complexity None = the bundle's
    default_score (tables: iwae over 5 draws; images: -ELBO per bit of complexity).
    bundle_dir: where the exported bundle is kept (default: a temporary directory that
    lives as long as the detector). window (steps, or "auto") and stride: X is a series
    (T,) or (T, C), NaN = missing, the model a windowed one, and every score, label and
    prediction is one per time step."""

    def __init__(
        self,
        contamination: float = 0.1,
        *,
        epochs: int | None = None,
        batch_size: int = 128,
        lr: float = LR,
        beta: float = 1.0,
        patience: int | None = PATIENCE,
        latent_dim: int | None = None,
        hidden: tuple[int, ...] | None = None,
        likelihood: str | None = None,
        trim: float | None = None,
        score_type: str | None = None,
        samples: int | None = None,
        complexity: bool | None = None,
        seed: int = 0,
        bundle_dir: str | Path | None = None,
        window: int | str | None = None,
        stride: int = 1,
    ):
        self.contamination = contamination
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta = beta
        self.patience = patience
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.likelihood = likelihood
        self.trim = trim
        self.score_type = score_type
        self.samples = samples
        self.complexity = complexity
        self.seed = seed
        self.bundle_dir = bundle_dir
        self.window = window
        self.stride = stride

    def fit(self, X, y=None) -> VAEDetector:
        """Train, export and calibrate on X (N, ...); y is ignored (unsupervised)."""
        options = TrainOptions(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, beta=self.beta,
            patience=self.patience, latent_dim=self.latent_dim, hidden=self.hidden,
            likelihood=self.likelihood, trim=self.trim, seed=self.seed,
        )  # fmt: skip
        X = np.asarray(X)
        self._workspace = tempfile.TemporaryDirectory(prefix="vae-edge-detector-")
        work = Path(self._workspace.name)
        np.save(work / "train.npy", X)
        train(str(work / "train.npy"), work / "run", options, progress=False,
              window=self.window, stride=self.stride)  # fmt: skip
        bundle = Path(self.bundle_dir) if self.bundle_dir is not None else work / "bundle"
        export_run(work / "run", bundle, force=True)
        model = EdgeVAE.load(bundle)
        threshold = calibrate(model, X, contamination=self.contamination,
                              score_type=self.score_type, samples=self.samples,
                              seed=self.seed, complexity=self.complexity)  # fmt: skip
        write_threshold(bundle, threshold)
        self.model_ = EdgeVAE.load(bundle)
        self.bundle_ = bundle
        self.threshold_ = threshold.value
        self.decision_scores_ = self.model_.score(X)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Anomaly score per sample (float32; higher = more anomalous), computed as for
        threshold_."""
        return self._fitted().score(X)

    def predict(self, X) -> np.ndarray:
        """1 where the score is above threshold_, else 0."""
        return self._fitted().predict(X).astype(int)

    def fit_predict(self, X, y=None) -> np.ndarray:
        return self.fit(X).labels_

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments (scikit-learn's clone and grid search use these)."""
        return {name: getattr(self, name) for name in _parameters()}

    def set_params(self, **params) -> VAEDetector:
        for name, value in params.items():
            if name not in _parameters():
                raise ValueError(f"VAEDetector has no parameter {name!r}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != _defaults()[k]}
        return f"VAEDetector({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def __sklearn_tags__(self):
        """What scikit-learn (1.6 and later) asks of an estimator in clone and Pipeline: an
        outlier detector, no target. Called only by scikit-learn, so only it imports it."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type="outlier_detector", target_tags=TargetTags(required=False))

    def __getstate__(self) -> dict:
        """The parameters and, once fitted, the bundle's files as bytes: onnxruntime's
        sessions do not pickle, so a pickled detector carries its model and loads it again."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("model_", "_workspace")}
        if hasattr(self, "model_"):
            files = sorted(p for p in Path(self.bundle_).iterdir() if p.is_file())
            state["bundle_files_"] = {p.name: p.read_bytes() for p in files}
        return state

    def __setstate__(self, state: dict) -> None:
        files = state.pop("bundle_files_", None)
        self.__dict__.update(state)
        if files is not None:
            self._workspace = tempfile.TemporaryDirectory(prefix="vae-edge-detector-")
            self.bundle_ = Path(self._workspace.name) / "bundle"
            self.bundle_.mkdir()
            for name, data in files.items():
                (self.bundle_ / name).write_bytes(data)
            self.model_ = EdgeVAE.load(self.bundle_)

    def _fitted(self) -> EdgeVAE:
        if not hasattr(self, "model_"):
            raise RuntimeError("this VAEDetector is not fitted yet; call fit(X) first")
        return self.model_


def _parameters() -> list[str]:
    return [p for p in inspect.signature(VAEDetector.__init__).parameters if p != "self"]


def _defaults() -> dict:
    signature = inspect.signature(VAEDetector.__init__).parameters
    return {name: signature[name].default for name in _parameters()}
