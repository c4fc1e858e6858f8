"""Export a training run as a model bundle: encoder.onnx, decoder.onnx, the score graphs
(prepare.onnx, loss.onnx: export/score_graphs.py) and vae.json.

Export is not done until it is validated: both graphs are checked (onnx.checker, no random
op, symbolic batch dimension) and run under onnxruntime through the runtime's own loader
against PyTorch at several batch sizes; the end-to-end score is compared with the same eps.
Each graph is then lowered to the lowest opset and IR version it can have, so that older
onnxruntimes load it, and the same checks run again on the lowered graphs. The bundle is
built in a temporary directory and moved into place only if every check passes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import version_converter

from vae_edge.export.score_graphs import add_score_graphs
from vae_edge.runtime.bench import data_like_samples
from vae_edge.runtime.data import umask
from vae_edge.runtime.errors import InputError, VAEEdgeError
from vae_edge.runtime.manifest import FORMAT_VERSION, MANIFEST_FILE, Graph, Manifest
from vae_edge.runtime.model import EdgeVAE
from vae_edge.runtime.protobuf import ir_version_and_opset
from vae_edge.runtime.scoring import draw_latents, row_noise
from vae_edge.training.model import VAE, kl_divergence
from vae_edge.training.train import RunConfig, default_score, load_run

OPSET = 18  # what the exporter writes; lower() then takes each graph as low as it goes
EXPORTER = (
    f"torch.onnx.export(dynamo=True, opset_version={OPSET}), lowered by onnx.version_converter"
)
PARITY_BATCHES = (1, 2, 3, 64)
RTOL, ATOL = 1e-4, 1e-5
RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
              "Multinomial", "Bernoulli"}  # fmt: skip


class ExportError(VAEEdgeError):
    """The exported graphs failed validation; no bundle was written."""


class _Encoder(torch.nn.Module):
    """vae.encode as a module of its own, for its graph (the argument names the input)."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        return self.vae.encode(x)


class _Decoder(_Encoder):
    def forward(self, z):
        return self.vae.decode(z)


# Variants of the fp32 graphs, each kept only if its scores on samples drawn from the model
# correlate with the fp32 ones at least this much (int8 measured 0.9994 on the MNIST model,
# fp16 0.99999996).
MIN_SCORE_CORRELATION = {"int8": 0.99, "fp16": 0.999}
QUANTIZE = tuple(MIN_SCORE_CORRELATION)
QUANT_CHECK_SAMPLES = 512


def export_run(
    run_dir: str | Path, out: str | Path, force: bool = False, quantize: str | None = None
) -> Manifest:
    """Export the run in `run_dir` to the bundle directory `out` and return its manifest.
    quantize="int8": int8 weights (onnxruntime dynamic quantization); "fp16": float16
    weights and arithmetic, float32 inputs and outputs (for GPUs). Either is made after the
    fp32 graphs pass the parity gate, and its scores must then correlate with the fp32 ones
    (MIN_SCORE_CORRELATION)."""
    if quantize not in (None, *QUANTIZE):
        raise InputError(f"unknown quantization {quantize!r} (use {', '.join(QUANTIZE)})")
    vae, config = load_run(run_dir)
    out = Path(out)
    if out.exists() and not (out / MANIFEST_FILE).is_file() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not a model bundle; choose an empty directory")
    if (out / MANIFEST_FILE).is_file() and not force:
        raise InputError(f"{out}: a bundle is already there (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)  # like `train --out`
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        staging.chmod(0o777 & ~umask())  # mkdtemp makes 0700
        manifest = _build(vae, config, staging)
        if quantize:
            manifest = _quantize(manifest, staging, quantize)
        manifest = add_score_graphs(staging)
        _replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _build(vae: VAE, config: RunConfig, folder: Path) -> Manifest:
    m = config.model
    shape = tuple(m.input_shape)
    signatures = {"encoder": (["x"], ["mu", "logvar"]), "decoder": (["z"], ["x"])}
    examples = {"encoder": (_Encoder(vae), torch.rand(2, *shape)),
                "decoder": (_Decoder(vae), torch.randn(2, m.latent_dim))}  # fmt: skip
    exported = {
        name: _export_graph(*examples[name], f"{name}.onnx", *signatures[name])
        for name in signatures
    }
    versions = {
        "vae_edge": _version("vae-edge"),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": _version("onnxscript"),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
    manifest_dict = {
        "format_version": FORMAT_VERSION,
        "input_shape": list(shape),
        "input_dtype": "float32",
        "data_dtype": config.data["dtype"],
        "preprocessing": config.preprocessing,
        "likelihood": m.likelihood,
        "latent_dim": m.latent_dim,
        "exporter": EXPORTER,
        "versions": versions,
        "training": {
            "model": {"arch": m.arch, "hidden": m.hidden},
            "data": config.data,
            "options": config.training,
            "summary": config.summary,
        },
        "default_score": asdict(default_score(shape, m.likelihood, "series" in config.data)),
        "threshold": None,
        "observation_logvar": _observation_logvar(vae),
        "binary": bool(config.data.get("binary", False)),
        "series": config.data.get("series"),
    }
    # The gate at the exporter's opset, then again at the lowered one: a converter bug
    # shows as a parity failure of the lowered graphs, not as wrong scores on a device.
    _write_bundle(vae, folder, exported, signatures, manifest_dict)
    lowered = {name: lower(model, f"{name}.onnx") for name, model in exported.items()}
    return _write_bundle(vae, folder, lowered, signatures, manifest_dict)


def _write_bundle(vae, folder: Path, models: dict, signatures: dict, manifest_dict) -> Manifest:
    """Save the graphs and the manifest into `folder`, then run the parity gate on them."""
    for name, model in models.items():
        file = folder / f"{name}.onnx"
        onnx.save_model(model, str(file))
        manifest_dict[name] = _graph_entry(file, *signatures[name])
    manifest_dict["parity"] = {}
    (folder / MANIFEST_FILE).write_text(Manifest.from_dict(manifest_dict).to_json())
    manifest_dict["parity"] = check_parity(vae, EdgeVAE.load(folder))
    manifest = Manifest.from_dict(manifest_dict)
    (folder / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest


def _graph_entry(file: Path, inputs, outputs) -> dict:
    """The manifest's entry for a saved graph; its IR version and opset are read from the
    file as the runtime's onnxruntime check reads them."""
    data = file.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    return Graph(file.name, sha256, inputs, outputs, *ir_version_and_opset(data)).__dict__


def lower(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The graph at the lowest opset onnx.version_converter takes it to, one opset at a time
    until a step is refused (no adapter, or the checker rejects the result), with the lowest
    IR version that its opsets allow. The MLP and conv graphs reach opset 14 and IR 7
    (Reshape has no adapter from 14 to 13), which onnxruntime has loaded since 1.8; the
    exporter's IR 10 needs 1.18."""
    lowest = _with_min_ir_version(model)
    for opset in range(OPSET - 1, 6, -1):
        try:
            lower_model = _with_min_ir_version(version_converter.convert_version(lowest, opset))
            onnx.checker.check_model(lower_model, full_check=True)
        except (RuntimeError, ValueError, onnx.checker.ValidationError):
            break
        lowest = lower_model
    _check_graph(lowest, name)
    return lowest


def _with_min_ir_version(model: onnx.ModelProto) -> onnx.ModelProto:
    model.ir_version = onnx.helper.find_min_ir_version_for(model.opset_import)
    return model


def _observation_logvar(vae: VAE) -> list[float] | None:
    logvar = vae.observation_logvar()
    return None if logvar is None else logvar.detach().flatten().tolist()


@contextlib.contextmanager
def _quiet_logging():
    """The exporter logs registry noise (e.g. "torchvision is not installed") and the
    quantizer advice to the root logger; neither is for our users."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _export_graph(module, example, name: str, inputs, outputs) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1)
    with _quiet_logging():
        program = torch.onnx.export(
            module.eval(),
            (example,),
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            external_data=False,
            verbose=False,
            report=False,
        )
    model = program.model_proto
    # The exporter records stack traces with this machine's paths on every node; drop them
    # so a bundle reveals no paths and `make model` gives the same bytes in any checkout.
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.metadata_props[:]
    _check_graph(model, name)
    return model


def _check_graph(model: onnx.ModelProto, name: str) -> None:
    onnx.checker.check_model(model, full_check=True)
    random = sorted({n.op_type for n in model.graph.node} & RANDOM_OPS)
    if random:
        raise ExportError(f"{name}: graph contains random ops {random}")
    for value in [*model.graph.input, *model.graph.output]:
        dim0 = value.type.tensor_type.shape.dim[0]
        if not dim0.dim_param:
            raise ExportError(f"{name}: {value.name} has a fixed batch dimension")


def _quantize(fp32: Manifest, folder: Path, kind: str) -> Manifest:
    """Replace the bundle's graphs in `folder` by their `kind` version ("int8" or "fp16")
    and check them against the fp32 bundle on samples drawn from the model itself."""
    reference = EdgeVAE.load(folder)
    x = data_like_samples(reference, QUANT_CHECK_SAMPLES, seed=0)
    expected = reference.score(x)
    graphs = {}
    for graph in (fp32.encoder, fp32.decoder):
        file = folder / graph.file
        with _quiet_logging():
            converted = _int8(file) if kind == "int8" else _fp16(file)
        _check_graph(converted, graph.file)
        onnx.save_model(converted, str(file))
        graphs[graph.file] = _graph_entry(file, graph.inputs, graph.outputs)
    how = {
        "int8": "onnxruntime.quantization.quantize_dynamic (int8 weights)",
        "fp16": "onnxruntime.transformers.float16 (fp16 inside, fp32 inputs and outputs)",
    }[kind]
    d = fp32.to_dict() | {
        "encoder": graphs[fp32.encoder.file],
        "decoder": graphs[fp32.decoder.file],
        "exporter": f"{fp32.exporter}; {how}",
    }
    (folder / MANIFEST_FILE).write_text(Manifest.from_dict(d).to_json())
    scores = EdgeVAE.load(folder).score(x)
    correlation = float(np.corrcoef(expected, scores)[0, 1])
    least = MIN_SCORE_CORRELATION[kind]
    if not correlation >= least:
        raise ExportError(
            f"{kind} scores correlate {correlation:.4f} with fp32 ones (at least {least} "
            f"needed): this model does not convert well to {kind}"
        )
    relative = np.abs(scores - expected) / np.maximum(np.abs(expected), 1e-6)
    d["parity"] = fp32.parity | {
        kind: {
            "samples": QUANT_CHECK_SAMPLES,
            "score_correlation": correlation,
            "median_rel_diff_score": float(np.median(relative)),
            "max_rel_diff_score": float(relative.max()),
            "min_correlation": least,
        }
    }
    manifest = Manifest.from_dict(d)
    (folder / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest


def _int8(file: Path) -> onnx.ModelProto:
    """int8 weights, activations quantized on the fly. Dynamic, not static QDQ: on the MNIST
    model static QDQ (calibrated on 512 samples) was no faster at batch 4096, slower at
    batch 1, and its scores correlated 0.988 with fp32 against 0.9994 (benchmarks/).
    Matrix products only: convolutions stay float32, because onnxruntime runs ConvInteger
    with int8 weights only from 1.24 on (`make compat`), and they hold few of a conv
    model's weights (the MNIST conv encoder's int8 graph: 958 kB against 860 kB)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        quantized = Path(tmp) / file.name
        quantize_dynamic(
            file, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
        )
        return onnx.load(str(quantized))


def _fp16(file: Path) -> onnx.ModelProto:
    """float16 weights and arithmetic; inputs and outputs stay float32, so the runtime and
    the manifest's contract do not change."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(file)), keep_io_types=True))
    model.topological_sort()  # the converter appends its input casts at the end
    return model.model


def check_parity(vae: VAE, edge: EdgeVAE, seed: int = 0) -> dict[str, float]:
    """Compare onnxruntime (through the runtime) with PyTorch; raise ExportError beyond
    rtol 1e-4 / atol 1e-5. Returns the max absolute differences."""
    rng = np.random.default_rng(seed)
    k = edge.manifest.latent_dim
    worst = {"mu": 0.0, "logvar": 0.0, "decoder": 0.0, "score": 0.0, "elbo": 0.0}
    for n in PARITY_BATCHES:
        # valid encoder inputs for the likelihood, taken back to the data's units
        raw = edge.manifest.preprocessing.invert(
            edge.likelihood.example_inputs(rng, (n, *edge.manifest.input_shape))
        )
        x_t = torch.from_numpy(edge.preprocess(raw))
        z = rng.standard_normal((n, k), dtype=np.float32)
        mu_o, logvar_o = edge.encode(raw)
        dec_o = edge.bundle.run_decoder(z)
        # Scores are measured from the floor; PyTorch's loss is not. Both are compared
        # with the floor taken off on the torch side by the torch mirror of the likelihood.
        score_o = edge.score(raw, samples=1, seed=seed, score_type="recon", complexity=False)
        elbo_o = edge.score(raw, samples=0, score_type="elbo", complexity=False)
        eps_z = draw_latents(mu_o, logvar_o, row_noise(seed, 0, n, 1, k))[:, 0]
        with torch.no_grad():
            mu_t, logvar_t = (t.numpy() for t in vae.encode(x_t))
            dec_t = vae.decode(torch.from_numpy(z)).numpy()
            # Same eps through PyTorch: z from ORT's mu/logvar so only the decoder and loss
            # differ; the encoder is compared on its own above.
            floor = vae.nll_floor(x_t)
            score_t = vae.reconstruction_nll(x_t, vae.decode(torch.from_numpy(eps_z))) - floor
            params, mu, logvar = vae(x_t)
            elbo_t = vae.reconstruction_nll(x_t, params) - floor + kl_divergence(mu, logvar)
        for name, a, b in (
            ("mu", mu_o, mu_t),
            ("logvar", logvar_o, logvar_t),
            ("decoder", dec_o, dec_t),
            ("score", score_o, score_t.numpy()),
            ("elbo", elbo_o, elbo_t.numpy()),
        ):
            if a.shape != b.shape or not np.allclose(a, b, rtol=RTOL, atol=ATOL):
                raise ExportError(
                    f"parity check failed: {name} at batch {n} differs from PyTorch by up to "
                    f"{_max_diff(a, b):.3g} (rtol {RTOL}, atol {ATOL})"
                )
            worst[name] = max(worst[name], _max_diff(a, b))
    return {f"max_abs_diff_{k}": v for k, v in worst.items()} | {
        "rtol": RTOL,
        "atol": ATOL,
        "batch_sizes": list(PARITY_BATCHES),
    }


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b))) if a.shape == b.shape else float("inf")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _replace_dir(new: Path, target: Path) -> None:
    """Move `new` to `target`; an existing bundle there is swapped out, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
