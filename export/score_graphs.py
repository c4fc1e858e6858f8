"""The score as two ONNX graphs beside the model's two: prepare.onnx (raw input -> the
encoder's input) and loss.onnx (raw input, the encoder's and decoder's outputs -> the
per-feature losses, the model's default score and is_anomaly). With them any onnxruntime
(C++, C#, Java, JavaScript, mobile) turns raw input into the number the model was
calibrated on without re-implementing the runtime's arithmetic. The chain, for a batch x:

    xp = prepare(x); mu, logvar = encoder(xp)
    z = mu                                      (default score without draws)
    z = mu + exp(0.5 * min(logvar, 30)) * eps   (L draws; eps from the manifest)
    params = decoder(z)
    score, features, is_anomaly[, newest] = loss(x, mu, logvar, [z, eps,] params, threshold)

The reparameterization stays outside the graphs (no random op anywhere); the draws' noise
is the manifest's default_score.eps, the same for every row, so that every language
reproduces it. The arithmetic mirrors runtime/likelihood.py and runtime/scoring.py op for
op in float32 where NumPy works in float32; sums are taken in float64 (closer to NumPy's
pairwise sums than a float32 ReduceSum). Standard ops at opset 14, IR 7: the bundle's.
runtime/score_graphs.py runs the chain with onnxruntime (the executable form of this
spec); docs/bundle-format.md documents the inputs and outputs.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vae_edge.runtime.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    STANDARDIZED_LIMIT,
    Graph,
    Manifest,
    is_channels_first,
    read_manifest,
)
from vae_edge.runtime.scoring import FLOAT32_MAX, LOGVAR_MAX, row_noise

OPSET, IR_VERSION = 14, 7
FLOAT, DOUBLE, BOOL = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.BOOL
PREPARE_FILE, LOSS_FILE = "prepare.onnx", "loss.onnx"
NOISE_SEED = 0  # eps stored at export: the noise row 0 drew under seed 0 before (row_noise)


class _Builder:
    """Nodes of one graph, each output named t<i>; constants become initializers."""

    def __init__(self):
        self.nodes, self.initializers, self._n = [], [], 0

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self._n += 1
        out = f"t{self._n}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value, dtype=np.float32) -> str:
        self._n += 1
        name = f"c{self._n}"
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def name(self, tensor: str, as_name: str) -> str:
        self.nodes.append(helper.make_node("Identity", [tensor], [as_name]))
        return as_name

    def model(self, inputs, outputs, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, doc.split(":")[0], inputs, outputs,
                                  initializer=self.initializers, doc_string=doc)  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="vae-edge", ir_version=IR_VERSION)  # fmt: skip
        onnx.checker.check_model(model, full_check=True)
        return model


def _tensor(name: str, dtype: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _prepared(b: _Builder, m: Manifest, x: str):
    """The encoder's input from raw x (float32), as Preprocessing.apply_and_clip and the
    likelihood's prepare make it, and (standardize) the unclipped float32 standardised
    values, from which a row beyond the clip is found, and the names of the mean and std."""
    p = m.preprocessing
    if p.kind == "scale":
        return b.op("Mul", x, b.const(np.float32(p.scale))), None, None
    per = m.input_shape[-1:] if len(p.mean) == m.input_shape[-1] else m.input_shape
    mean = np.asarray(p.mean, np.float32).reshape(per)
    std = np.maximum(np.asarray(p.std, np.float32), np.finfo(np.float32).tiny).reshape(per)
    mean, std = b.const(mean), b.const(std)
    unclipped = b.op("Div", b.op("Sub", x, mean), std)
    limit = np.float32(STANDARDIZED_LIMIT)
    clipped = b.op("Clip", unclipped, b.const(-limit), b.const(limit))
    xp = b.op("Where", b.op("IsNaN", clipped), b.const(np.float32(0)), clipped)
    return xp, unclipped, (mean, std)


def prepare_graph(m: Manifest) -> onnx.ModelProto:
    b = _Builder()
    xp = _prepared(b, m, "x")[0]
    b.name(xp, "xp")
    shape = ["N", *m.input_shape]
    doc = ("prepare: raw samples x (N, *input_shape) float32, NaN a series' missing "
           "reading -> the encoder's input xp")  # fmt: skip
    return b.model([_tensor("x", FLOAT, shape)], [_tensor("xp", FLOAT, shape)], doc)


def _losses(b: _Builder, m: Manifest, x: str, params: str, draws: int) -> str:
    """Per-feature losses measured from the floor, float64, (N, *shape) or with draws
    (N, L, *shape): Bernoulli.nll and Gaussian.nll."""
    xp, unclipped, moments = _prepared(b, m, x)
    features = list(range(1, 1 + len(m.input_shape)))
    if draws:
        params = b.op("Reshape", params, b.const([-1, draws, *m.input_shape], np.int64))
        axis = b.const([1], np.int64)
        x, xp = b.op("Unsqueeze", x, axis), b.op("Unsqueeze", xp, axis)
        unclipped = unclipped and b.op("Unsqueeze", unclipped, axis)
        features = [a + 1 for a in features]
    if m.likelihood == "bernoulli":
        one = b.const(np.float32(1))
        # softplus(l) - x l - H(x), in NumPy's order: log(1 + exp(-|l|)) + max(l, 0) ...
        t = b.op("Log", b.op("Add", b.op("Exp", b.op("Neg", b.op("Abs", params))), one))
        t = b.op("Sub", b.op("Add", t, b.op("Relu", params)), b.op("Mul", xp, params))
        inside = b.op("And", b.op("Greater", xp, b.const(np.float32(0))), b.op("Less", xp, one))
        v = b.op("Where", inside, xp, b.const(np.float32(0.5)))
        w = b.op("Sub", one, v)
        h = b.op("Add", b.op("Mul", v, b.op("Log", v)), b.op("Mul", w, b.op("Log", w)))
        floor = b.op("Where", inside, b.op("Neg", h), b.const(np.float32(0)))
        return b.op("Cast", b.op("Sub", t, floor), to=DOUBLE)
    # Gaussian: 0.5 (x - mean)^2 / variance, float32; a row with a value beyond the clip is
    # measured in float64 from its unclipped distance (Gaussian.prepare's target).
    precision = None
    if m.observation_logvar is not None:
        logvar = np.asarray(m.observation_logvar, np.float32)
        precision = np.exp(-logvar).reshape(m.input_shape if logvar.size != m.input_shape[-1]
                                            else m.input_shape[-1:])  # fmt: skip
    d32 = b.op("Sub", xp, params)
    t32 = b.op("Mul", d32, d32)
    if precision is not None:
        pre = b.const(precision)
        t32 = b.op("Mul", t32, pre)
    t32 = b.op("Mul", t32, b.const(np.float32(0.5)))
    t = b.op("Cast", t32, to=DOUBLE)
    if moments is not None:
        # the mean and std as float32, widened: one copy of each in the graph (a float64
        # copy doubled a wide table's graph); it moves a far row's distance by 1e-7 of it
        mean64, std64 = (b.op("Cast", c, to=DOUBLE) for c in moments)
        target = b.op("Div", b.op("Sub", b.op("Cast", x, to=DOUBLE), mean64), std64)
        d = b.op("Sub", target, b.op("Cast", params, to=DOUBLE))
        t64 = b.op("Mul", d, d)
        if precision is not None:
            t64 = b.op("Mul", t64, b.op("Cast", pre, to=DOUBLE))
        t64 = b.op("Mul", t64, b.const(0.5, np.float64))
        far = b.op(
            "GreaterOrEqual", b.op("Abs", unclipped), b.const(np.float32(STANDARDIZED_LIMIT))
        )
        far_row = b.op("ReduceMax", b.op("Cast", far, to=FLOAT), axes=features, keepdims=1)
        t = b.op("Where", b.op("Greater", far_row, b.const(np.float32(0))), t64, t)
        missing = b.op("IsNaN", x)
        t = b.op("Where", missing, b.const(0.0, np.float64), t)
    return t


def _finite_float32(b: _Builder, t: str) -> str:
    return b.op("Cast", b.op("Min", t, b.const(FLOAT32_MAX, np.float64)), to=FLOAT)


def _complexity_bits(b: _Builder, m: Manifest, xp: str) -> str:
    """Bernoulli.complexity_bits: one bit per 8-bit level plus log2(1 + |step|) for each
    step between neighbouring levels, across and down, in each channel."""
    shape = m.input_shape
    levels = b.op("Round", b.op("Mul", xp, b.const(np.float32(255))))
    if len(shape) == 2:
        levels = b.op("Unsqueeze", levels, b.const([1], np.int64))  # (N, 1, H, W)
    elif not is_channels_first(shape):
        levels = b.op("Transpose", levels, perm=[0, 3, 1, 2])
    total = None
    for axis in (3, 2):  # across, down
        last = b.op("Slice", levels, b.const([1], np.int64), b.const([2**31], np.int64),
                    b.const([axis], np.int64))  # fmt: skip
        first = b.op("Slice", levels, b.const([0], np.int64), b.const([-1], np.int64),
                     b.const([axis], np.int64))  # fmt: skip
        step = b.op("Cast", b.op("Abs", b.op("Sub", last, first)), to=DOUBLE)
        code = b.op("Div", b.op("Log", b.op("Add", step, b.const(1.0, np.float64))),
                    b.const(math.log(2), np.float64))  # fmt: skip
        bits = b.op("ReduceSum", code, b.const([1, 2, 3], np.int64), keepdims=0)
        total = bits if total is None else b.op("Add", total, bits)
    size = b.const(float(math.prod(shape)), np.float64)
    return b.op("Cast", b.op("Add", total, size), to=FLOAT)


def loss_graph(m: Manifest) -> onnx.ModelProto:
    """The model's default score (manifest default_score) and each feature's loss."""
    b = _Builder()
    score_type, draws = m.default_score.score_type, m.default_score.samples
    k, shape = m.latent_dim, list(m.input_shape)
    inputs = [_tensor("x", FLOAT, ["N", *shape]), _tensor("mu", FLOAT, ["N", k]),
              _tensor("logvar", FLOAT, ["N", k])]  # fmt: skip
    if draws:
        inputs += [_tensor("z", FLOAT, ["N", draws, k]), _tensor("eps", FLOAT, ["N", draws, k])]
    inputs += [_tensor("params", FLOAT, ["M", *shape]), _tensor("threshold", FLOAT, [])]
    t = _losses(b, m, "x", "params", draws)
    n_axes = len(shape)
    logvar = b.op("Min", "logvar", b.const(np.float32(LOGVAR_MAX)))
    lv64, mu64 = b.op("Cast", logvar, to=DOUBLE), b.op("Cast", "mu", to=DOUBLE)
    kl_terms = b.op("Sub", b.op("Sub", b.op("Add", b.const(1.0, np.float64), lv64),
                                b.op("Mul", mu64, mu64)), b.op("Exp", lv64))  # fmt: skip
    kl = b.op("Mul", b.op("ReduceSum", kl_terms, b.const([1], np.int64), keepdims=0),
              b.const(-0.5, np.float64))  # fmt: skip
    if not draws:
        features = _finite_float32(b, t)
        recon = b.op("ReduceSum", t, b.const(list(range(1, 1 + n_axes)), np.int64), keepdims=0)
        score = recon if score_type == "recon" else b.op("Add", recon, kl)
    else:
        features = _finite_float32(b, b.op("ReduceMean", t, axes=[1], keepdims=0))
        recon = b.op("ReduceSum", t, b.const(list(range(2, 2 + n_axes)), np.int64), keepdims=0)
        if score_type == "recon":
            score = b.op("ReduceMean", recon, axes=[1], keepdims=0)
        elif score_type == "elbo":
            score = b.op("Add", b.op("ReduceMean", recon, axes=[1], keepdims=0), kl)
        else:  # iwae: log w = -recon - 0.5 sum(z^2 - eps^2 - logvar); -log mean w
            lv = b.op("Unsqueeze", lv64, b.const([1], np.int64))
            z64, eps64 = b.op("Cast", "z", to=DOUBLE), b.op("Cast", "eps", to=DOUBLE)
            q = b.op("Sub", b.op("Sub", b.op("Mul", z64, z64), b.op("Mul", eps64, eps64)), lv)
            q = b.op("ReduceSum", q, b.const([2], np.int64), keepdims=0)
            log_w = b.op("Sub", b.op("Neg", recon), b.op("Mul", q, b.const(0.5, np.float64)))
            lowest = b.const(float(np.finfo(np.float64).min), np.float64)
            top = b.op("Max", b.op("ReduceMax", log_w, axes=[1], keepdims=1), lowest)
            mean_w = b.op("Div", b.op("ReduceSum", b.op("Exp", b.op("Sub", log_w, top)),
                                      b.const([1], np.int64), keepdims=0),
                          b.const(float(draws), np.float64))  # fmt: skip
            top = b.op("Squeeze", top, b.const([1], np.int64))
            score = b.op("Neg", b.op("Add", top, b.op("Log", mean_w)))
    score = _finite_float32(b, score)
    if m.default_score.complexity:
        score = b.op("Div", score, _complexity_bits(b, m, _prepared(b, m, "x")[0]))
    outputs = [_tensor("score", FLOAT, ["N"]), _tensor("features", FLOAT, ["N", *shape]),
               _tensor("is_anomaly", BOOL, ["N"])]  # fmt: skip
    b.name(score, "score")
    b.name(features, "features")
    b.name(b.op("Greater", score, "threshold"), "is_anomaly")
    if m.series is not None:  # the newest step's loss, summed over channels, for the alarm
        newest = b.op("Gather", features, b.const(-1, np.int64), axis=1)
        b.name(b.op("ReduceSum", b.op("Cast", newest, to=DOUBLE), b.const([1], np.int64),
                    keepdims=0), "newest")  # fmt: skip
        outputs.append(_tensor("newest", DOUBLE, ["N"]))
    doc = (f"loss: the default score ({score_type}, {draws} draws"
           f"{', per complexity bit' if m.default_score.complexity else ''}), each feature's "
           "loss from its floor, score > threshold")  # fmt: skip
    return b.model(inputs, outputs, doc)


def stored_eps(m: Manifest) -> list[list[float]] | None:
    """The default score's noise (samples, latent_dim), the same for every row."""
    draws = m.default_score.samples
    if not draws:
        return None
    return row_noise(NOISE_SEED, 0, 1, draws, m.latent_dim)[0].tolist()


def add_score_graphs(folder: str | Path) -> Manifest:
    """Write prepare.onnx and loss.onnx into the bundle `folder` and list them in its
    manifest (format 2) with the default score's stored noise; check that they give the
    runtime's own scores. Rewrites them when present (an older bundle is upgraded)."""
    from vae_edge.runtime.model import EdgeVAE
    from vae_edge.runtime.score_graphs import check_graphs

    folder = Path(folder)
    path = folder / MANIFEST_FILE
    manifest = read_manifest(path.read_text(), str(path))
    d = manifest.to_dict()
    d["default_score"]["eps"] = stored_eps(manifest)
    d["format_version"] = FORMAT_VERSION
    manifest = Manifest.from_dict(d)
    graphs = {}
    for name, file, model in (("prepare", PREPARE_FILE, prepare_graph(manifest)),
                              ("loss", LOSS_FILE, loss_graph(manifest))):  # fmt: skip
        data = model.SerializeToString()
        (folder / file).write_bytes(data)
        graphs[name] = Graph(file, hashlib.sha256(data).hexdigest(),
                             [i.name for i in model.graph.input],
                             [o.name for o in model.graph.output], IR_VERSION,
                             OPSET).__dict__  # fmt: skip
    d["score_graphs"] = graphs
    path.write_text(Manifest.from_dict(d).to_json())
    d["parity"] = dict(d.get("parity") or {}) | {"score_graphs": check_graphs(EdgeVAE.load(folder))}
    manifest = Manifest.from_dict(d)
    path.write_text(manifest.to_json())
    return manifest


def upgrade_bundle(folder: str | Path) -> Manifest:
    """`vae-edge upgrade`: add the score graphs to a bundle in place, atomically (a copy is
    upgraded and checked, then swapped in)."""
    import shutil
    import tempfile

    from vae_edge.export.onnx_export import _replace_dir
    from vae_edge.runtime.bundle import load_bundle

    folder = Path(folder)
    load_bundle(folder)  # a bundle that does not load is refused before anything is written
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        manifest = add_score_graphs(staging)
        _replace_dir(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
