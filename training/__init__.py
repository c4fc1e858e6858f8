"""Training side (needs the `train` extra): the VAE in PyTorch, its training loop, and
VAEDetector, the scikit-learn / PyOD style detector over train, export and runtime."""


def __getattr__(name):
    if name == "VAEDetector":
        from vae_edge.training.detector import VAEDetector

        return VAEDetector
    raise AttributeError(f"module 'vae_edge.training' has no attribute {name!r}")
