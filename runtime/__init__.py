"""Torch-free runtime: load an exported VAE bundle and sample, reconstruct and score with it.

Imports only numpy and onnxruntime (Pillow for PNG files). ``EdgeVAE`` and the scoring
types are imported lazily so that ``vae_edge.runtime.errors`` (used by the CLI for every
command) stays instant.

Files by job: bundle.py (read, hash, trust checks, sessions, verify), likelihood.py (the
loss, its floor and the decoder mean), scoring.py (settings, results, score arithmetic),
model.py (EdgeVAE, the facade), data.py and output.py (reading inputs, writing results).
"""

from vae_edge.runtime.errors import BundleError, InputError, InputWarning, VAEEdgeError

__all__ = ["EdgeVAE", "ScoreSettings", "ScoredBatch", "BundleError", "InputError",
           "InputWarning", "VAEEdgeError"]  # fmt: skip


def __getattr__(name):
    if name == "EdgeVAE":
        from vae_edge.runtime.model import EdgeVAE

        return EdgeVAE
    if name in ("ScoreSettings", "ScoredBatch"):
        from vae_edge.runtime import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module 'vae_edge.runtime' has no attribute {name!r}")
