"""The bundle's score graphs run as any other runtime runs them: prepare, encoder, the draws
outside the graphs, decoder, loss (export/score_graphs.py; docs/bundle-format.md). This is
the executable form of the chain that the JavaScript runtime and other ports follow, and
the check that it gives the Python runtime's numbers (export runs it on every bundle)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from vae_edge.runtime.bundle import graph_bytes
from vae_edge.runtime.errors import BundleError
from vae_edge.runtime.scoring import LOGVAR_MAX

# The graphs' scores against EdgeVAE.score's: within GRAPH_RTOL relative, or within
# FEATURE_ATOL nats per feature. Each feature's loss is a float32 difference of terms near
# 1 (softplus(l) - x l - H(x)), so ORT's exp and log and NumPy's, one ulp apart, differ by
# up to a few 1e-7 nats per feature (more where |logit| is large) whatever the loss:
# relative to a score near 0 (a model that reconstructs an input almost exactly), that is
# more than 1e-5.
GRAPH_RTOL = 1e-5
FEATURE_ATOL = 1e-6
CHECK_ROWS = 64


class GraphScorer:
    """run(x, threshold) -> {"score", "features", "is_anomaly"[, "newest"]} for raw
    samples x (N, *input_shape) float32, through the bundle's four graphs."""

    def __init__(self, model):
        m = model.manifest
        if m.score_graphs is None:
            raise BundleError(f"{model.source}: no score graphs (format {m.format_version}); "
                              "add them with `vae-edge upgrade`")  # fmt: skip
        self.model, self.manifest = model, m
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.sessions = {
            name: ort.InferenceSession(graph_bytes(model.source, graph), options,
                                       providers=["CPUExecutionProvider"])
            for name, graph in m.score_graphs.items()
        }  # fmt: skip
        eps = m.default_score.eps
        self.eps = None if eps is None else np.asarray(eps, np.float32)

    def run(self, x: np.ndarray, threshold: float = np.inf) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        (xp,) = self.sessions["prepare"].run(None, {"x": x})
        mu, logvar = self.model.bundle.run_encoder(xp)
        feeds = {"x": x, "mu": mu, "logvar": logvar, "threshold": np.array(threshold, np.float32)}
        if self.eps is None:
            feeds["params"] = self.model.bundle.run_decoder(mu)
        else:  # the reparameterization, outside the graphs
            eps = np.broadcast_to(self.eps, (len(x), *self.eps.shape))
            scale = np.exp(np.float32(0.5) * np.minimum(logvar, np.float32(LOGVAR_MAX)))
            z = mu[:, None, :] + scale[:, None, :] * eps
            feeds |= {"z": z, "eps": np.ascontiguousarray(eps)}
            feeds["params"] = self.model.bundle.run_decoder(z.reshape(-1, mu.shape[1]))
        names = self.manifest.score_graphs["loss"].outputs
        return dict(zip(names, self.sessions["loss"].run(names, feeds), strict=True))


def check_graphs(model, rows: int = CHECK_ROWS) -> dict[str, float]:
    """The graphs' scores and per-feature losses against the runtime's on samples drawn
    from the model, rows far outside its range and (series) missing readings; BundleError
    beyond GRAPH_RTOL. Returns the largest relative differences."""
    from vae_edge.runtime.bench import data_like_samples

    x = data_like_samples(model, rows, seed=0).astype(np.float32)
    m = model.manifest
    if m.preprocessing.kind == "standardize":
        x[-2] = np.asarray(m.preprocessing.mean, np.float32).mean() + 1e6  # beyond the clip
        if m.series is not None:
            x[-3, 0] = np.nan
    # one row at a time on both sides: a batch holding a far row is measured in float64 by
    # NumPy, and int8 graphs quantize each call's activations with the call's own range
    scorer = GraphScorer(model)
    rows_out = [scorer.run(x[i : i + 1]) for i in range(len(x))]
    got = {name: np.concatenate([r[name] for r in rows_out]) for name in rows_out[0]}
    atol = FEATURE_ATOL * m.n_features
    if m.default_score.complexity:
        atol /= model.likelihood.complexity_bits(model.likelihood.prepare(x))
    settings = model._settings(None, None, None, None, None, None, flags=False)
    want = np.concatenate([model.score_batch(x[i : i + 1], i, settings, True).scores
                           for i in range(len(x))])  # fmt: skip
    features = np.concatenate([model.feature_scores(x[i : i + 1]) for i in range(len(x) - 3)])
    worst = {
        "max_rel_diff_score": float(
            np.max(np.abs(got["score"] - want) / np.maximum(np.abs(want), atol / GRAPH_RTOL))
        ),
        # each feature's loss relative to the largest: a pixel's own loss can be 1e-6 nats
        "max_rel_diff_features": float(
            np.max(np.abs(got["features"][:-3] - features))
            / max(float(np.abs(features).max()), FEATURE_ATOL / GRAPH_RTOL)
        ),
    }
    if max(worst.values()) > GRAPH_RTOL:
        raise BundleError(f"{model.source}: the score graphs differ from the runtime by "
                          f"{max(worst.values()):.3g} relative (at most {GRAPH_RTOL})")  # fmt: skip
    return worst | {"rtol": GRAPH_RTOL, "feature_atol": FEATURE_ATOL, "rows": rows}
