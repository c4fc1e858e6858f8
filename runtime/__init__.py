"""Torch-free runtime: load an exported VAE bundle and sample, reconstruct and score with it.

Imports only numpy and onnxruntime (Pillow for PNG files). ``EdgeVAE`` is imported lazily so
that ``vae_edge.runtime.errors`` (used by the CLI for every command) stays instant.
"""

from vae_edge.runtime.errors import BundleError, InputError, InputWarning, VAEEdgeError

__all__ = ["EdgeVAE", "BundleError", "InputError", "InputWarning", "VAEEdgeError"]


def __getattr__(name):
    if name == "EdgeVAE":
        from vae_edge.runtime.model import EdgeVAE

        return EdgeVAE
    raise AttributeError(f"module 'vae_edge.runtime' has no attribute {name!r}")
