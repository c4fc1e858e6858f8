"""Training with PyTorch (the `train` extra). Import submodules: `vae_edge.training.train`."""
