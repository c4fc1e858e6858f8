"""The VAE (Kingma & Welling, 2014) as an MLP, and its loss, -ELBO per sample."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# A learned Gaussian variance below this would let a feature that the model reconstructs
# exactly (e.g. a constant column) drive the likelihood to infinity.
MIN_OBS_LOGVAR = math.log(1e-2)


class VAE(nn.Module):
    """MLP VAE. With `learn_variance`, a Gaussian decoder also learns one log-variance per
    feature (not per sample), so features it cannot reconstruct weigh less in the loss."""

    def __init__(self, input_shape, hidden=(400,), latent_dim=20, learn_variance=False):
        super().__init__()
        self.input_shape = tuple(input_shape)
        n = math.prod(self.input_shape)
        self.obs_logvar = nn.Parameter(torch.zeros(self.input_shape)) if learn_variance else None
        sizes = [n, *hidden]
        self.encoder = nn.Sequential(*_mlp(sizes))
        self.mu = nn.Linear(sizes[-1], latent_dim)
        self.logvar = nn.Linear(sizes[-1], latent_dim)
        back = [latent_dim, *reversed(hidden)]
        self.decoder = nn.Sequential(*_mlp(back), nn.Linear(back[-1], n))

    def encode(self, x):
        h = self.encoder(x.flatten(1))
        return self.mu(h), self.logvar(h)

    @staticmethod
    def reparameterize(mu, logvar, eps):
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z):
        """Decoder output: Bernoulli logits or Gaussian means, shaped like the input."""
        return self.decoder(z).unflatten(1, self.input_shape)

    def forward(self, x, eps):
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, eps)), mu, logvar

    def observation_logvar(self):
        """The Gaussian log-variance per feature, floored; None = unit variance."""
        if self.obs_logvar is None:
            return None
        return self.obs_logvar.clamp(min=MIN_OBS_LOGVAR)


def _mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers


def reconstruction_nll(x, params, likelihood, obs_logvar=None):
    """-log p(x|z) per sample, summed over features (nats)."""
    if likelihood == "bernoulli":
        elementwise = F.binary_cross_entropy_with_logits(params, x, reduction="none")
    elif obs_logvar is None:  # unit-variance Gaussian in standardised units
        elementwise = 0.5 * (x - params) ** 2 + HALF_LOG_2PI
    else:
        elementwise = 0.5 * ((x - params) ** 2 * torch.exp(-obs_logvar) + obs_logvar) + HALF_LOG_2PI
    return elementwise.flatten(1).sum(1)


def kl_divergence(mu, logvar):
    """KL(q(z|x) || N(0, I)) per sample, closed form (Kingma & Welling, appendix B):
    -0.5 * sum(1 + logvar - mu^2 - exp(logvar))."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
