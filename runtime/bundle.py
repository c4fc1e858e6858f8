"""A bundle on disk -> two trusted onnxruntime sessions.

Loading reads vae.json (validated whole by Manifest), reads each graph, checks its sha256
against the manifest and that it holds no external data (the hash would not cover it),
checks that the installed onnxruntime is recent enough for the graph's IR version and opset,
makes the session on the requested device and checks the graph's signature against the
manifest. `verify` runs the same checks one by one and reports each instead of raising.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vae_edge.runtime.errors import BundleError, InputError, VAEEdgeError
from vae_edge.runtime.manifest import MANIFEST_FILE, Graph, Manifest, read_manifest
from vae_edge.runtime.protobuf import ProtobufError, external_data_locations, ir_version_and_opset

DEVICES = ("cpu", "cuda")
# threads=None: a graph call of fewer multiply-adds than this (rows x the graph's weights,
# a float32 weight a 4-byte parameter) runs on one intra-op thread, a larger one on all
# cores. Measured on 2 cores (benchmarks/default_score.py): the shipped model's score is
# faster on one thread up to 16 rows, on two from 32 rows (1.19x; 1.52x at 256); a
# 6-column table model runs as fast either way at any batch. A session with one thread is
# also made faster (3 against 12 ms for the shipped model's two).
PARALLEL_MULTIPLY_ADDS = 12_500_000  # the shipped model: 23 rows a graph call

# (release, the highest IR version and ai.onnx opset it loads) for each onnxruntime release
# that raised either: a one-node graph stamped with each IR version 3-13 and opset 7-26,
# loaded by the last patch release of each minor from 1.15 to 1.32 (`benchmarks/compat.py
# --versions ...` measures them and checks each release it runs against this table).
ONNXRUNTIME_LIMITS = (
    ((1, 15), 9, 19),
    ((1, 17), 9, 20),
    ((1, 18), 10, 21),
    ((1, 21), 10, 22),
    ((1, 23), 11, 23),
    ((1, 24), 13, 25),
    ((1, 25), 13, 26),
)


def default_model_dir() -> Path:
    """The MNIST bundle shipped inside the package (see `make model`)."""
    return Path(__file__).parent / "default_model"


@dataclass(eq=False)  # sessions do not compare
class Bundle:
    """The manifest and the two sessions; `source` names the bundle in messages.

    bind: pass mu from graph to graph on the device (IOBinding) for z = mu. On a GPU that
    keeps mu there; on the CPU binding costs more than it saves (76 against 65 us for the
    encoder at batch 1), so it is on for CUDA only."""

    manifest: Manifest
    encoder: ort.InferenceSession
    decoder: ort.InferenceSession
    source: str
    device: str = "cpu"
    bind: bool = False
    # threads=None on a CPU with several cores: the graphs, for a second pair of sessions on
    # all cores that calls of PARALLEL_MULTIPLY_ADDS and more run on (made on the first).
    graphs_for_parallel: tuple[bytes, bytes] | None = field(default=None, repr=False)
    _parallel: list = field(default_factory=lambda: [None, None], repr=False)

    def run_encoder(self, xp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar) for encoder input xp."""
        encoder = self._session(0, len(xp))
        mu, logvar = encoder.run(self.manifest.encoder.outputs, {self._x: xp})
        return mu, logvar

    def run_decoder(self, z: np.ndarray) -> np.ndarray:
        """The decoder's output (logits or means) for latent codes z."""
        decoder = self._session(1, len(z))
        return decoder.run(self.manifest.decoder.outputs[:1], {self._z: z})[0]

    def _session(self, which: int, rows: int) -> ort.InferenceSession:
        """Graph `which` (0 encoder, 1 decoder) for a call of `rows` rows."""
        one_thread = (self.encoder, self.decoder)[which]
        graphs = self.graphs_for_parallel
        if graphs is None or rows * len(graphs[which]) / 4 < PARALLEL_MULTIPLY_ADDS:
            return one_thread
        if self._parallel[which] is None:
            self._parallel[which] = ort.InferenceSession(
                graphs[which], _session_options(threads=None), providers=["CPUExecutionProvider"]
            )
        return self._parallel[which]

    def run_at_mean(self, xp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """mu, logvar and the decoder's output at z = mu: one call of each graph."""
        if not self.bind:
            mu, logvar = self.run_encoder(xp)
            return mu, logvar, self.run_decoder(mu)
        # mu goes from graph to graph on the device; only the decoder's output and the
        # small mu and logvar are copied out.
        encoder = self.encoder.io_binding()
        encoder.bind_cpu_input(self._x, xp)
        for name in self.manifest.encoder.outputs:
            encoder.bind_output(name, self.device)
        self.encoder.run_with_iobinding(encoder)
        decoder = self.decoder.io_binding()
        decoder.bind_ortvalue_input(self._z, encoder.get_outputs()[0])
        decoder.bind_output(self.manifest.decoder.outputs[0], "cpu")
        self.decoder.run_with_iobinding(decoder)
        mu, logvar = encoder.copy_outputs_to_cpu()
        return mu, logvar, decoder.copy_outputs_to_cpu()[0]

    @property
    def providers(self) -> list[str]:
        return self.encoder.get_providers()

    @property
    def _x(self) -> str:
        return self.manifest.encoder.inputs[0]

    @property
    def _z(self) -> str:
        return self.manifest.decoder.inputs[0]


def load_bundle(
    path: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    verify: bool = True,
) -> Bundle:
    """Read and check a bundle directory (None = the shipped model) and make its sessions.
    See EdgeVAE.load for the arguments."""
    directory, where = _bundle_dir(path)
    manifest = _read_manifest(directory, where)
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    providers = _providers(device)
    parallel = threads is None and device == "cpu" and (os.cpu_count() or 1) > 1
    options = _session_options(1 if parallel else threads)
    sessions, graphs = [], []
    for graph in (manifest.encoder, manifest.decoder):
        model = _read_graph(directory, graph, where)
        graphs.append(model)
        if verify:
            _check_hash(model, graph, where)
        _check_self_contained(model, graph, where)
        _check_onnxruntime_version(model, graph, where)
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
    if verify:  # the score graphs are not run here, but shipped: checked as the others
        for graph in (manifest.score_graphs or {}).values():
            _check_hash(_read_graph(directory, graph, where), graph, where)
    return Bundle(manifest, *sessions, source=where, device=device, bind=device != "cpu",
                  graphs_for_parallel=tuple(graphs) if parallel else None)  # fmt: skip


def _session_options(threads: int | None) -> ort.SessionOptions:
    """Sequential execution, one inter-op thread, `threads` intra-op threads (None: all
    cores), and no spinning: idle worker threads would spin between calls, taking a core
    from NumPy's loss and from the app (score at batch 4096 on 2 cores: 28,063 samples/s
    without spinning, 26,169 with it)."""
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def verify(path: str | Path | None = None) -> list[tuple[str, bool, str]]:
    """Check a bundle step by step: (check, passed, detail) for each. A bad bundle is
    reported, not raised; the checks after a failed one are not run."""
    try:
        directory, where = _bundle_dir(path)
        manifest = _read_manifest(directory, where)
    except VAEEdgeError as e:
        return [("manifest", False, str(e))]
    report = [("manifest", True, f"format {manifest.format_version}, fields valid")]
    for graph in (manifest.encoder, manifest.decoder, *(manifest.score_graphs or {}).values()):
        for check, step, detail in (
            ("sha256", _check_hash, graph.sha256),
            ("self-contained", _check_self_contained, "no external data"),
        ):
            try:
                step(_read_graph(directory, graph, where), graph, where)
                report.append((f"{graph.file} {check}", True, detail))
            except VAEEdgeError as e:
                report.append((f"{graph.file} {check}", False, str(e)))
    if not all(passed for _, passed, _ in report):
        return report
    check = "graphs load in onnxruntime; inputs and outputs match the manifest"
    try:
        bundle = load_bundle(path)
    except VAEEdgeError as e:
        return [*report, (check, False, str(e))]
    return [*report, (check, True, ", ".join(bundle.providers))]


def graph_bytes(source: str, graph: Graph) -> bytes:
    """A graph file of the bundle loaded from `source` (its path, or "default model"),
    checked against its sha256."""
    directory, where = _bundle_dir(None if source == "default model" else source)
    data = _read_graph(directory, graph, where)
    _check_hash(data, graph, source)
    return data


def _bundle_dir(path) -> tuple[Path, str]:
    if path is None:
        return default_model_dir(), "default model"
    if not Path(path).is_dir():
        raise BundleError(f"{path}: not a model bundle directory")
    return Path(path), str(path)


def _read_manifest(directory: Path, where: str) -> Manifest:
    manifest_file = directory / MANIFEST_FILE
    if not manifest_file.is_file():
        raise BundleError(f"{where}: not a model bundle (no {MANIFEST_FILE})")
    return read_manifest(manifest_file.read_text(encoding="utf-8"), where)


def _read_graph(directory: Path, graph: Graph, where: str) -> bytes:
    file = directory / graph.file
    if not file.is_file():
        raise BundleError(f"{where}: missing graph file {graph.file}")
    return file.read_bytes()


def _check_hash(data: bytes, graph: Graph, where: str) -> None:
    if hashlib.sha256(data).hexdigest() != graph.sha256:
        raise BundleError(f"{where}: {graph.file} does not match the sha256 in {MANIFEST_FILE}")


def _check_self_contained(data: bytes, graph: Graph, where: str) -> None:
    try:
        external = external_data_locations(data)
    except ProtobufError as e:
        raise BundleError(f"{where}: {graph.file} is not a valid ONNX file ({e})") from None
    if external:
        raise BundleError(
            f"{where}: {graph.file} refers to external data {external[0]!r}; bundle graphs "
            "must be self-contained (the hash covers only the .onnx file)"
        )


def required_onnxruntime(ir_version: int, opset: int) -> tuple[int, int] | None:
    """The first onnxruntime release (major, minor) that loads a graph of this IR version
    and opset, or None if it is beyond every release measured."""
    return next(
        (release for release, ir, op in ONNXRUNTIME_LIMITS if ir >= ir_version and op >= opset),
        None,
    )


def _check_onnxruntime_version(data: bytes, graph: Graph, where: str) -> None:
    ir_version, opset = ir_version_and_opset(data)
    needed = required_onnxruntime(ir_version, opset)
    installed = tuple(int(n) for n in re.match(r"(\d+)\.(\d+)", ort.__version__).groups())
    # Releases older than the oldest one measured have unknown limits: only a graph that
    # needs more than that oldest release is refused on them.
    if needed is not None and needed > ONNXRUNTIME_LIMITS[0][0] and installed < needed:
        release = ".".join(map(str, needed))
        raise BundleError(
            f"{where}: {graph.file} (ONNX IR version {ir_version}, opset {opset}) needs "
            f"onnxruntime >= {release}, this is {ort.__version__}: pip install "
            f"'onnxruntime>={release}', or export the bundle again (vae-edge export lowers "
            "the graphs for older onnxruntimes)"
        )


def _check_signature(session, graph: Graph, manifest: Manifest, where: str) -> None:
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


def _providers(device: str) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device != "cuda":
        raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")
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


def _installed(distribution: str) -> bool:
    from importlib import metadata  # here: only device="cuda" needs it

    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True
