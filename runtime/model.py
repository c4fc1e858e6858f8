"""EdgeVAE: a VAE bundle run with onnxruntime and NumPy only.

Data path: raw array -> validated once (shape, dtype, finite, range) -> preprocessed as in
training (from the manifest) -> encoder graph -> z = mu + exp(logvar / 2) * eps with eps
from a seeded NumPy Generator -> decoder graph -> score per sample (reconstruction loss,
-ELBO or -L_k).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vae_edge.runtime.errors import BundleError, InputError, InputWarning, VAEEdgeError
from vae_edge.runtime.manifest import MANIFEST_FILE, SCORE_TYPES, Manifest, read_manifest
from vae_edge.runtime.protobuf import ProtobufError, external_data_locations

DEFAULT_SCORE_TYPE = "elbo"  # best on the ODDS benchmark (README, benchmarks/results/)
DEFAULT_SEED = 0  # seed=None means this, so score() and predict() agree call after call
DEFAULT_BATCH_SIZE = 1024
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def default_model_dir() -> Path:
    """The MNIST bundle shipped inside the package (see `make model`)."""
    return Path(__file__).parent / "default_model"


class EdgeVAE:
    """A loaded bundle. Build it with `EdgeVAE.load`; the two sessions are made once."""

    def __init__(
        self,
        manifest: Manifest,
        encoder: ort.InferenceSession,
        decoder: ort.InferenceSession,
        source: str = "",
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str = "cpu",
    ):
        self.manifest = manifest
        self.source = source
        self.batch_size = batch_size
        # On a GPU, mu stays on the device between the two graphs (IOBinding). On the CPU
        # binding costs more than it saves: 76 against 65 us for the encoder at batch 1.
        self.device = device
        self._bind = device != "cpu"
        self._encoder = encoder
        self._decoder = decoder
        self._x_name = encoder.get_inputs()[0].name
        self._z_name = decoder.get_inputs()[0].name
        self._encoder_outputs = manifest.encoder.outputs
        self._decoder_outputs = manifest.decoder.outputs[:1]
        self._obs_logvar = None
        self._entropy_table = None  # of uint8 input's 256 values, see _bernoulli_entropy
        self._uint8_in_range = False  # uint8 input always preprocesses into [0, 1]
        if manifest.likelihood == "bernoulli" and manifest.preprocessing.kind == "scale":
            levels = manifest.preprocessing.apply(np.arange(256, dtype=np.uint8))
            self._entropy_table = bernoulli_entropy(levels)
            self._uint8_in_range = bool(levels.min() >= 0 and levels.max() <= 1)
        if manifest.observation_logvar is not None:
            shape = manifest.input_shape
            self._obs_logvar = np.asarray(manifest.observation_logvar, np.float32).reshape(shape)
            self._obs_precision = np.exp(-self._obs_logvar)

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        verify: bool = True,
    ) -> EdgeVAE:
        """Load a bundle directory (None = the default MNIST model shipped in the package).

        device: "cpu" or "cuda" (needs onnxruntime-gpu; refused loudly if CUDA is not active).
        threads: intra-op threads per session; None lets onnxruntime choose (all cores).
            At batch 1, threads=1 is as fast and leaves the other cores free.
        verify: check each graph's sha256 against the manifest before onnxruntime reads it.
            Turn off only while developing: a bundle is trusted because of this check.
        """
        directory, where = _bundle_dir(path)
        manifest = _bundle_manifest(directory, where)
        if threads is not None and threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        providers = _providers(device)
        options = ort.SessionOptions()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        # Idle worker threads would spin between calls, taking a core from NumPy's loss
        # and from the app: score at batch 4096 on 2 cores ran at 28,063 samples/s
        # without spinning against 26,169 with it (batch 1: 267 vs 243 us; use threads=1).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = []
        for graph in (manifest.encoder, manifest.decoder):
            model = _read_graph(directory / graph.file, where)
            if verify:
                _check_hash(model, graph, where)
            _check_self_contained(model, graph, where)
            try:
                session = ort.InferenceSession(model, options, providers=providers)
            except Exception as e:  # onnxruntime raises its own untyped errors
                first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise BundleError(
                    f"{where}: {graph.file} is not a loadable ONNX graph ({first_line})"
                ) from None
            _check_signature(session, graph, manifest, where)
            if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
                raise BundleError(f"{where}: CUDA was requested but onnxruntime fell back to CPU")
            sessions.append(session)
        return cls(manifest, *sessions, source=where, device=device)

    # -- public surface -------------------------------------------------------------------

    @property
    def threshold(self) -> float | None:
        """The anomaly threshold stored in the manifest, or None."""
        t = self.manifest.threshold
        return None if t is None else t.value

    def encode(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Posterior parameters (mu, logvar), each (N, latent_dim)."""
        xp = self.preprocess(x)
        parts = [self._encode(xp[i : i + self.batch_size]) for i in self._starts(len(xp))]
        if not parts:
            empty = np.zeros((0, self.manifest.latent_dim), np.float32)
            return empty, empty.copy()
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def decode(self, z) -> np.ndarray:
        """Decoder mean in the input's units, (N, *input_shape)."""
        z = _as_array(z, "z")
        if z.ndim != 2 or z.shape[1] != self.manifest.latent_dim:
            raise InputError(
                f"z must have shape (N, {self.manifest.latent_dim}), got {tuple(z.shape)}"
            )
        _require_finite(z, "z")
        z = np.ascontiguousarray(z, dtype=np.float32)
        out = [self._decode(z[i : i + self.batch_size]) for i in self._starts(len(z))]
        return self._to_data(np.concatenate(out) if out else self._empty())

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """n new samples: z ~ N(0, I) drawn with NumPy, decoded to the input's units."""
        n = _positive_int(n, "n")
        rng = _rng(seed)
        return self.decode(rng.standard_normal((n, self.manifest.latent_dim), dtype=np.float32))

    def reconstruct(self, x, seed: int | None = None) -> np.ndarray:
        """Encode, draw one z per sample, decode: (N, *input_shape) in the input's units."""
        xp = self.preprocess(x)
        rng = _rng(seed)
        out = []
        for i in self._starts(len(xp)):
            mu, logvar = self._encode(xp[i : i + self.batch_size])
            out.append(self._decode(draw_latents(mu, logvar, 1, rng).reshape(mu.shape)))
        return self._to_data(np.concatenate(out) if out else self._empty())

    def score(
        self,
        x,
        samples: int = 0,
        seed: int | None = None,
        score_type: str = DEFAULT_SCORE_TYPE,
    ) -> np.ndarray:
        """Anomaly score per sample, (N,) float32, in nats (higher = more anomalous).

        score_type "recon": the reconstruction loss -log p(x|z), the first term of the
        training loss; "elbo" (default): -ELBO = reconstruction loss + KL(q(z|x) || p(z)),
        the KL saying how unusual the sample's code is; "iwae": -L_k, the importance-
        weighted bound with k = samples draws (tighter than -ELBO). Each is measured from
        the sample's floor, the loss of a perfect reconstruction (see nll_floor): add
        nll_floor(x) to get the training loss's own units.
        samples=0 (default) decodes z = mu: deterministic, and the best default on the
        benchmark. samples=L averages over L draws z = mu + exp(logvar / 2) * eps, with eps
        from NumPy seeded by `seed` (encoder once, decoder once on all L draws).
        """
        rng = self._check_scoring(samples, seed, score_type)
        return self._score_rows(self._as_samples(x), 0, samples, rng, score_type, False)

    def feature_scores(self, x, samples: int = 0, seed: int | None = None) -> np.ndarray:
        """Reconstruction loss of each feature, (N, *input_shape): which features make a
        sample anomalous. Sums over features to score(..., score_type="recon")."""
        rng = self._check_scoring(samples, seed, "recon")
        return self._score_rows(self._as_samples(x), 0, samples, rng, "recon", True)

    def score_chunks(
        self,
        chunks: Iterable,
        samples: int = 0,
        seed: int | None = None,
        score_type: str = DEFAULT_SCORE_TYPE,
        per_feature: bool = False,
    ) -> Iterator[np.ndarray]:
        """Score an iterable of arrays as one long array, yielding the scores of each chunk:
        the same numbers as score(concatenated chunks), with memory bounded by one chunk.
        Rows are validated and preprocessed batch by batch, never copied whole."""
        rng = self._check_scoring(samples, seed, score_type)
        offset = 0
        for chunk in chunks:
            x = self._as_samples(chunk)
            yield self._score_rows(x, offset, samples, rng, score_type, per_feature)
            offset += len(x)

    def predict(self, x, threshold: float | None = None) -> np.ndarray:
        """True where score > threshold. Scores are computed with the settings stored with
        the model's threshold (score type, samples, seed); `threshold` overrides its value."""
        limit = self.threshold if threshold is None else threshold
        if limit is None:
            raise BundleError(f"{self.source}: the model has no threshold; predict needs one")
        return self.score(x, **self.scoring()) > limit

    def scoring(self, score_type=None, samples=None, seed=None) -> dict:
        """Score settings: those given, else the ones stored with the threshold (so that
        scores compare with it), else the defaults. Keyword arguments for score()."""
        t = self.manifest.threshold
        return {
            "score_type": score_type or (t.score_type if t else DEFAULT_SCORE_TYPE),
            "samples": samples if samples is not None else (t.samples if t else 0),
            "seed": seed if seed is not None else (t.seed if t else DEFAULT_SEED),
        }

    def preprocess(self, x) -> np.ndarray:
        """Validate raw input and preprocess it to the encoder's float32 input, exactly as
        training did."""
        return self._preprocess(self._as_samples(x), 0)

    # -- internals ------------------------------------------------------------------------

    def _check_scoring(self, samples, seed, score_type: str):
        """Validate score arguments; the noise generator (None when z = mu draws nothing)."""
        if not isinstance(samples, (int, np.integer)) or isinstance(samples, bool) or samples < 0:
            raise InputError(f"samples must be an integer >= 0, got {samples!r}")
        if score_type not in SCORE_TYPES:
            raise InputError(
                f"score_type must be one of {', '.join(SCORE_TYPES)}, got {score_type!r}"
            )
        if score_type == "iwae" and samples < 1:
            raise InputError("score_type iwae needs samples >= 1 (the k of L_k)")
        seed = _check_seed(seed)
        return np.random.default_rng(seed) if samples else None

    def _score_rows(self, x, offset: int, samples: int, rng, score_type: str, per_feature: bool):
        """Scores of samples x, (N, *input_shape), in batches; `offset` is x[0]'s index in
        the whole input, for error messages."""
        rows = max(1, self.batch_size // max(samples, 1))
        out = []
        for i in range(0, len(x), rows):
            batch = x[i : i + rows]
            xp = self._preprocess(batch, offset + i)
            out.append(self._score(batch, xp, samples, rng, score_type, per_feature))
        if len(out) == 1:
            return out[0]
        empty = self._empty() if per_feature else np.zeros(0, np.float32)
        return np.concatenate([empty, *out])

    def _starts(self, n: int) -> range:
        return range(0, n, self.batch_size)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, *self.manifest.input_shape), np.float32)

    def _as_samples(self, x) -> np.ndarray:
        """Check dtype and shape; return x as (N, *input_shape) without copying."""
        m = self.manifest
        x = _as_array(x, "input")
        shape = m.input_shape
        if x.shape == shape:
            x = x[None]  # one sample
        elif x.ndim == 2 and len(shape) > 1 and x.shape[1] == m.n_features:
            x = x.reshape(len(x), *shape)  # flat rows, e.g. from a CSV
        if x.shape[1:] != shape:
            flat = f" or (N, {m.n_features})" if len(shape) > 1 else ""
            raise InputError(
                f"input has shape {tuple(x.shape)}; this model takes samples of shape "
                f"{shape} (arrays (N, {', '.join(map(str, shape))}){flat})"
            )
        return x

    def _preprocess(self, x: np.ndarray, offset: int) -> np.ndarray:
        """Check values (finite; in range for Bernoulli) and preprocess; `offset` is the
        index of x[0] in the whole input, for the error message."""
        m = self.manifest
        _require_finite(x, "input", offset)
        if m.data_dtype == "uint8" and offset == 0 and x.size and 0 < x.max() <= 1:
            # e.g. MNIST as floats in [0, 1] given to a model trained on grey levels 0..255:
            # valid numbers, but scored as near-black images.
            warnings.warn(
                "input values are all within [0, 1] but this model was trained on uint8 data "
                "(0..255); if the data is scaled to [0, 1], multiply it by 255",
                InputWarning,
                stacklevel=4,
            )
        xp = m.preprocessing.apply(x)
        in_range = x.dtype == np.uint8 and self._uint8_in_range  # no need to look
        if (
            m.likelihood == "bernoulli"
            and xp.size
            and not in_range
            and (xp.min() < 0 or xp.max() > 1)
        ):
            high = float(m.preprocessing.invert(np.ones(1, np.float32))[0])
            raise InputError(
                f"input values must lie in [0, {high:g}] for this model "
                f"(found {float(x.min()):g} to {float(x.max()):g})"
            )
        return np.ascontiguousarray(xp, dtype=np.float32)

    def _encode(self, xp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, logvar = self._encoder.run(self._encoder_outputs, {self._x_name: xp})
        return mu, logvar

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return self._decoder.run(self._decoder_outputs, {self._z_name: z})[0]

    def _encode_decode_mean(self, xp: np.ndarray) -> tuple[np.ndarray, ...]:
        """mu, logvar and the decoder's output at z = mu, with mu passed from graph to graph
        on the device; only the decoder's output and the small mu and logvar are copied out."""
        encoder = self._encoder.io_binding()
        encoder.bind_cpu_input(self._x_name, xp)
        for name in self._encoder_outputs:
            encoder.bind_output(name, self.device)
        self._encoder.run_with_iobinding(encoder)
        decoder = self._decoder.io_binding()
        decoder.bind_ortvalue_input(self._z_name, encoder.get_outputs()[0])
        decoder.bind_output(self._decoder_outputs[0], "cpu")
        self._decoder.run_with_iobinding(decoder)
        mu, logvar = encoder.copy_outputs_to_cpu()
        return mu, logvar, decoder.copy_outputs_to_cpu()[0]

    def _score(self, x, xp, samples: int, rng, score_type: str, per_feature: bool):
        """Scores of raw samples x, preprocessed to xp, (n, *input_shape)."""
        if samples == 0:  # z = mu: the default, and the whole cost of a batch-1 call
            if self._bind:
                mu, logvar, params = self._encode_decode_mean(xp)
            else:
                mu, logvar = self._encode(xp)
                params = self._decode(mu)
            elementwise = self._elementwise_nll(x, xp, params)  # (n, *input_shape)
            if per_feature:
                return elementwise
            recon = elementwise.reshape(len(x), -1).sum(axis=1, dtype=np.float32)
            return recon if score_type == "recon" else (recon + _kl(mu, logvar)).astype(np.float32)
        mu, logvar = self._encode(xp)
        n, k = mu.shape
        z = draw_latents(mu, logvar, samples, rng)  # (n, L, k)
        params = self._decode(z.reshape(-1, k)).reshape(n, samples, *self.manifest.input_shape)
        elementwise = self._elementwise_nll(x[:, None], xp[:, None], params)  # (n, L, *shape)
        if per_feature:
            return elementwise.mean(axis=1)
        recon = elementwise.reshape(n, samples, -1).sum(axis=2, dtype=np.float32)  # (n, L)
        if score_type == "recon":
            return recon.mean(axis=1)
        if score_type == "elbo":
            return (recon.mean(axis=1) + _kl(mu, logvar)).astype(np.float32)
        # iwae: log w = log p(x|z) + log p(z) - log q(z|x); the log(2 pi) terms cancel.
        eps = (z - mu[:, None]) * np.exp(-0.5 * logvar)[:, None]
        log_w = -recon - 0.5 * np.sum(np.square(z) - np.square(eps) - logvar[:, None], axis=2)
        log_w = log_w.astype(np.float64)
        top = log_w.max(axis=1, keepdims=True)
        log_mean_w = top[:, 0] + np.log(np.mean(np.exp(log_w - top), axis=1))
        return (-log_mean_w).astype(np.float32)

    def _elementwise_nll(self, x: np.ndarray, xp: np.ndarray, params: np.ndarray) -> np.ndarray:
        """-log p(x|z) of each feature of raw x, preprocessed to xp, for decoder output
        `params`, minus its floor -log p(x | x): zero where the reconstruction is perfect
        (see nll_floor)."""
        if self.manifest.likelihood == "bernoulli":
            # BCE with logits: softplus(l) - x * l, softplus(l) = max(l, 0) + log(1 + e^-|l|).
            # In place with np.exp/np.log, which are SIMD-vectorised for float32;
            # np.logaddexp is not and took 4x longer at batch 1024.
            t = np.abs(params)
            np.negative(t, out=t)
            np.exp(t, out=t)
            t += 1
            np.log(t, out=t)
            t += np.maximum(params, 0)
            t -= xp * params
            t -= self._bernoulli_entropy(x, xp)
            return t
        t = np.square(xp - params)
        if self._obs_logvar is not None:  # learned variance per feature
            t *= self._obs_precision
        t *= 0.5
        return t

    def nll_floor(self, x) -> np.ndarray:
        """Per sample, the reconstruction loss -log p(x | x) of a perfect reconstruction.

        Scores are measured from this floor, so a sample the model reconstructs exactly
        scores 0 whatever its content. Bernoulli: the entropy of the grey levels, 0 for
        0/1 data; with grey levels, images with more ink would otherwise score higher
        (measured on one-class MNIST: 1s scored as more normal than the 8s a model was
        trained on). Gaussian: a constant. score(score_type="elbo") + nll_floor(x) is the
        -ELBO (the training loss), likewise for "recon" and "iwae"."""
        x = self._as_samples(x)
        xp = self._preprocess(x, 0)
        if self.manifest.likelihood == "bernoulli":
            floor = self._bernoulli_entropy(x, xp)
        else:
            logvar = 0 if self._obs_logvar is None else self._obs_logvar
            floor = np.broadcast_to(0.5 * logvar + np.float32(HALF_LOG_2PI), xp.shape)
        return floor.reshape(len(xp), -1).sum(axis=1, dtype=np.float32)

    def _bernoulli_entropy(self, x: np.ndarray, xp: np.ndarray) -> np.ndarray:
        """The Bernoulli floor of each feature of raw x, preprocessed to xp. uint8 input
        has 256 possible values: a table of their entropies gives the same numbers as
        computing them, 8x faster (the logs were a third of the score's time at batch 1024)."""
        if x.dtype != np.uint8 or self._entropy_table is None:
            return bernoulli_entropy(xp)
        return self._entropy_table[x]

    def _to_data(self, params: np.ndarray) -> np.ndarray:
        if self.manifest.likelihood == "bernoulli":
            with np.errstate(over="ignore"):  # exp(-l) = inf for l << 0 gives mean 0, rightly
                params = 1 / (1 + np.exp(-params))  # logits -> Bernoulli means
        return self.manifest.preprocessing.invert(params)


def bernoulli_entropy(xp: np.ndarray) -> np.ndarray:
    """-(x log x + (1 - x) log(1 - x)) elementwise; 0 at x = 0 and x = 1. Computed only
    where 0 < x < 1: most pixels of an image are 0 or 1, and the logs dominate the cost.
    log(1 - x), not log1p(-x): NumPy vectorises log for float32, not log1p (9x slower)."""
    h = np.zeros_like(xp)
    inside = (xp > 0) & (xp < 1)
    v = xp[inside]
    h[inside] = -(v * np.log(v) + (1 - v) * np.log(1 - v))
    return h


def _kl(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, closed form."""
    return -0.5 * np.sum(1 + logvar - np.square(mu) - np.exp(logvar), axis=1)


def draw_latents(mu: np.ndarray, logvar: np.ndarray, samples: int, rng) -> np.ndarray:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I), shape (N, samples, k).

    eps is drawn row by row (shape (N, samples, k), C order), so scoring N rows in one
    batch or in several uses the same eps for each row.
    """
    eps = rng.standard_normal((mu.shape[0], samples, mu.shape[1]), dtype=np.float32)
    return mu[:, None, :] + np.exp(0.5 * logvar)[:, None, :] * eps


def _check_seed(seed: int | None) -> int:
    seed = DEFAULT_SEED if seed is None else seed
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(_check_seed(seed))


def _positive_int(n, name: str) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InputError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def _as_array(x, name: str) -> np.ndarray:
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InputError(f"{name} is not a numeric array ({e})") from None
    if x.dtype.kind not in "uif":
        raise InputError(f"{name} has dtype {x.dtype}; numbers (int or float) are required")
    if x.ndim == 0:
        raise InputError(f"{name} is a scalar; an array of samples is required")
    return x


def _require_finite(x: np.ndarray, name: str, offset: int = 0) -> None:
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        first = np.argwhere(~np.isfinite(x))[0]
        where = f"sample {offset + int(first[0])}"
        if len(first) > 1:
            where += f", feature {tuple(int(i) for i in first[1:])}"
        raise InputError(f"{name} has NaN or infinite values (first in {where})")


def _providers(device: str) -> list:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            both = _installed("onnxruntime") and _installed("onnxruntime-gpu")
            raise BundleError(
                "device 'cuda' needs onnxruntime-gpu with a working CUDA; available "
                f"providers: {', '.join(ort.get_available_providers())}"
                + (
                    " (onnxruntime and onnxruntime-gpu are both installed and overwrite each "
                    "other's files: `make install-gpu` installs onnxruntime-gpu alone)"
                    if both
                    else ""
                )
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")


def _installed(distribution: str) -> bool:
    from importlib import metadata  # here: only device="cuda" needs it

    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _bundle_dir(path) -> tuple:
    if path is None:
        return default_model_dir(), "default model"
    if not Path(path).is_dir():
        raise BundleError(f"{path}: not a model bundle directory")
    return Path(path), str(path)


def _bundle_manifest(directory, where: str) -> Manifest:
    manifest_file = directory / MANIFEST_FILE
    if not manifest_file.is_file():
        raise BundleError(f"{where}: not a model bundle (no {MANIFEST_FILE})")
    return read_manifest(manifest_file.read_text(encoding="utf-8"), where)


def _read_graph(file, where: str) -> bytes:
    if not file.is_file():
        raise BundleError(f"{where}: missing graph file {file.name}")
    return file.read_bytes()


def _check_hash(data: bytes, graph, where: str) -> None:
    if hashlib.sha256(data).hexdigest() != graph.sha256:
        raise BundleError(f"{where}: {graph.file} does not match the sha256 in {MANIFEST_FILE}")


def _check_self_contained(data: bytes, graph, where: str) -> None:
    try:
        external = external_data_locations(data)
    except ProtobufError as e:
        raise BundleError(f"{where}: {graph.file} is not a valid ONNX file ({e})") from None
    if external:
        raise BundleError(
            f"{where}: {graph.file} refers to external data {external[0]!r}; bundle graphs "
            "must be self-contained (the hash covers only the .onnx file)"
        )


def verify_bundle(path: str | Path | None = None) -> list[tuple[str, bool, str]]:
    """Check a bundle step by step and return (check, passed, detail) for each. A bad
    bundle is reported, not raised; checks that need an earlier one to pass are skipped."""
    try:
        directory, where = _bundle_dir(path)
        manifest = _bundle_manifest(directory, where)
    except VAEEdgeError as e:
        return [("manifest", False, str(e))]
    report = [("manifest", True, f"format {manifest.format_version}, fields valid")]
    for graph in (manifest.encoder, manifest.decoder):
        for check, step, detail in (
            ("sha256", _check_hash, graph.sha256),
            ("self-contained", _check_self_contained, "no external data"),
        ):
            try:
                step(_read_graph(directory / graph.file, where), graph, where)
                report.append((f"{graph.file} {check}", True, detail))
            except VAEEdgeError as e:
                report.append((f"{graph.file} {check}", False, str(e)))
    if not all(passed for _, passed, _ in report):
        return report
    check = "graphs load in onnxruntime; inputs and outputs match the manifest"
    try:
        model = EdgeVAE.load(path)
    except VAEEdgeError as e:
        return [*report, (check, False, str(e))]
    report.append((check, True, ", ".join(model._encoder.get_providers())))
    x = model.sample(4, seed=0)
    scores = model.score(x, samples=2, seed=0)
    finite = bool(np.isfinite(x).all() and np.isfinite(scores).all())
    report.append(("sample and score give finite numbers", finite, f"scores {scores}"))
    same = np.array_equal(scores, model.score(x, samples=2, seed=0))
    report.append(("the same seed gives the same scores", same, "bit for bit" if same else ""))
    return report


def _check_signature(session, graph, manifest: Manifest, where: str) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != graph.inputs or outputs != graph.outputs:
        raise BundleError(
            f"{where}: {graph.file} has inputs {inputs} and outputs {outputs}; the manifest "
            f"says {graph.inputs} and {graph.outputs}"
        )
    is_encoder = graph is manifest.encoder
    first_in = session.get_inputs()[0].shape[1:]
    expected_in = list(manifest.input_shape) if is_encoder else [manifest.latent_dim]
    out = session.get_outputs()[0].shape[1:]
    expected_out = [manifest.latent_dim] if is_encoder else list(manifest.input_shape)
    if first_in != expected_in or out != expected_out:
        raise BundleError(
            f"{where}: {graph.file} takes {first_in} and gives {out} per sample; the manifest "
            f"says {expected_in} and {expected_out} (graphs from a different model?)"
        )
