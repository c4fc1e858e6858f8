"""The VAE (Kingma & Welling, 2014) as an MLP, and its loss, -ELBO per sample."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class VAE(nn.Module):
    def __init__(self, input_shape, hidden=(400,), latent_dim=20):
        super().__init__()
        self.input_shape = tuple(input_shape)
        n = math.prod(self.input_shape)
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


def _mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers


def reconstruction_nll(x, params, likelihood):
    """-log p(x|z) per sample, summed over features (nats)."""
    if likelihood == "bernoulli":
        elementwise = F.binary_cross_entropy_with_logits(params, x, reduction="none")
    else:  # unit-variance Gaussian in standardised units
        elementwise = 0.5 * (x - params) ** 2 + HALF_LOG_2PI
    return elementwise.flatten(1).sum(1)


def kl_divergence(mu, logvar):
    """KL(q(z|x) || N(0, I)) per sample, closed form (Kingma & Welling, appendix B):
    -0.5 * sum(1 + logvar - mu^2 - exp(logvar))."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
