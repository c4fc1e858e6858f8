"""The VAE (Kingma & Welling, 2014) as an MLP or a small convolutional net, and its loss."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from vae_edge.runtime.scoring import LOGVAR_MAX

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
ARCHS = ("mlp", "conv", "conv1d")
LIKELIHOODS = ("bernoulli", "gaussian")

# A learned Gaussian variance below this would let a feature that the model reconstructs
# exactly (e.g. a constant column) drive the likelihood to infinity.
MIN_OBS_LOGVAR = math.log(1e-2)


class VAE(nn.Module):
    """Encoder x -> (mu, logvar), decoder z -> Bernoulli logits or Gaussian means, and
    the likelihood p(x|z) those define (reconstruction_nll, nll_floor): the torch mirror of
    vae_edge.runtime.likelihood.

    arch "mlp": fully connected layers of sizes `hidden`. arch "conv": for images (H, W) or
    (C, H, W): two stride-2 convolutions with `channels` filters, then the `hidden` layers;
    the decoder mirrors it with transposed convolutions and crops to (H, W). arch "conv1d":
    for a series' windows (W, C): stride-2 convolutions over time with the C metrics as
    input channels (temporal_nets); no `hidden` layers.
    With `learn_variance`, a Gaussian decoder also learns one log-variance per feature
    (not per sample), so features it cannot reconstruct weigh less in the loss; per metric
    (the same at every step) for conv1d."""

    def __init__(
        self,
        input_shape,
        hidden=(400,),
        latent_dim=20,
        learn_variance=False,
        arch="mlp",
        channels=(32, 64),
        likelihood="gaussian",
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS or (learn_variance and likelihood != "gaussian"):
            raise ValueError(f"unknown likelihood {likelihood!r} (or variance learned for it)")
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.input_shape = tuple(input_shape)
        variance_shape = self.input_shape[-1:] if arch == "conv1d" else self.input_shape
        self.obs_logvar = nn.Parameter(torch.zeros(variance_shape)) if learn_variance else None
        features = hidden[-1] if hidden else None
        if arch == "mlp":
            n = math.prod(self.input_shape)
            self.encoder_input = (n,)
            self.encoder = nn.Sequential(*_mlp([n, *hidden]))
            back = [latent_dim, *reversed(hidden)]
            self.decoder = nn.Sequential(*_mlp(back), nn.Linear(back[-1], n))
        elif arch == "conv":
            self.encoder_input = image_channels(self.input_shape)
            self.encoder, self.decoder = _conv_nets(
                self.encoder_input, hidden, latent_dim, channels
            )
        elif arch == "conv1d":
            self.encoder_input = self.input_shape
            self.encoder, self.decoder, features = temporal_nets(self.input_shape, latent_dim)
        else:
            raise ValueError(f"unknown arch {arch!r}")
        self.mu = nn.Linear(features, latent_dim)
        self.logvar = nn.Linear(features, latent_dim)

    def encode(self, x):
        h = self.encoder(x.reshape(-1, *self.encoder_input))
        return self.mu(h), self.logvar(h)

    @staticmethod
    def reparameterize(mu, logvar, eps):
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z):
        """Decoder output: Bernoulli logits or Gaussian means, shaped like the input."""
        return self.decoder(z).reshape(-1, *self.input_shape)

    def forward(self, x, eps=None):
        """(decoder output, mu, logvar) for x; z = mu + exp(logvar / 2) * eps, or z = mu
        when eps is None. logvar is clamped at LOGVAR_MAX, as the runtime does after the
        encoder graph (the graph itself is encode, unclamped)."""
        mu, logvar = self.encode(x)
        logvar = logvar.clamp(max=LOGVAR_MAX)
        z = mu if eps is None else self.reparameterize(mu, logvar, eps)
        return self.decode(z), mu, logvar

    def observation_logvar(self):
        """The Gaussian log-variance per feature, floored; None = unit variance."""
        if self.obs_logvar is None:
            return None
        return self.obs_logvar.clamp(min=MIN_OBS_LOGVAR)

    def reconstruction_nll(self, x, params, present=None):
        """-log p(x|z) per sample, summed over features (nats), for decoder output params;
        with `present` (a series' mask, False at missing readings), over those present."""
        logvar = self.observation_logvar()
        if self.likelihood == "bernoulli":
            elementwise = F.binary_cross_entropy_with_logits(params, x, reduction="none")
        elif logvar is None:  # unit-variance Gaussian in standardised units
            elementwise = 0.5 * (x - params) ** 2 + HALF_LOG_2PI
        else:  # logvar per feature, or per metric of a series (broadcast over its steps)
            elementwise = 0.5 * ((x - params) ** 2 * torch.exp(-logvar) + logvar) + HALF_LOG_2PI
        if present is not None:
            elementwise = elementwise * present
        return elementwise.flatten(1).sum(1)

    def nll_floor(self, x):
        """-log p(x | x) per sample: the loss of a perfect reconstruction, the point the
        runtime's scores are measured from."""
        if self.likelihood == "bernoulli":
            floor = F.binary_cross_entropy(x, x, reduction="none")
        elif self.obs_logvar is None:
            floor = torch.full_like(x, HALF_LOG_2PI)
        else:
            floor = (0.5 * self.observation_logvar() + HALF_LOG_2PI).expand_as(x)
        return floor.flatten(1).sum(1)


def _mlp(sizes):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return layers


def image_channels(input_shape) -> tuple[int, int, int]:
    """(C, H, W) of an image shape (H, W) or (C, H, W); ValueError for other shapes."""
    shape = tuple(input_shape)
    chw = (1, *shape) if len(shape) == 2 else shape
    if len(chw) != 3 or min(chw[1:]) < 4:
        raise ValueError(
            f"the conv arch needs images (H, W) or (C, H, W), at least 4x4; got {shape}"
        )
    return chw


def _conv_nets(image_shape, hidden, latent_dim, channels):
    c, h, w = image_shape
    c1, c2 = channels
    # Each stride-2, kernel-4, padding-1 convolution halves a side and each transposed one
    # doubles it: sides are zero-padded up to a multiple of 4 and the decoder crops back.
    h4, w4 = math.ceil(h / 4), math.ceil(w / 4)
    flat = c2 * h4 * w4
    encoder = nn.Sequential(
        nn.ZeroPad2d((0, 4 * w4 - w, 0, 4 * h4 - h)) if (h % 4 or w % 4) else nn.Identity(),
        nn.Conv2d(c, c1, 4, 2, 1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 4, 2, 1),
        nn.ReLU(),
        nn.Flatten(),
        *_mlp([flat, *hidden]),
    )
    back = [latent_dim, *reversed(hidden), flat]
    decoder = nn.Sequential(
        *_mlp(back),
        nn.Unflatten(1, (c2, h4, w4)),
        nn.ConvTranspose2d(c2, c1, 4, 2, 1),
        nn.ReLU(),
        nn.ConvTranspose2d(c1, c, 4, 2, 1),
        _Crop(h, w),
    )
    return encoder, decoder


# conv1d: each stride-2, kernel-4, padding-1 convolution halves the steps, so a window
# shrinks TEMPORAL_SCALE-fold: its parameters grow as C x filters and (W / 8) x filters x
# latents, never as W x C (a 290-step window of 19 metrics: 30k parameters, the MLP 720k).
TEMPORAL_FILTERS = 32
TEMPORAL_LAYERS = 3
TEMPORAL_SCALE = 2**TEMPORAL_LAYERS


def temporal_nets(window_shape, latent_dim, filters=TEMPORAL_FILTERS):
    """(encoder, decoder, encoder features) of the conv1d arch for windows (W, C). The
    window is zero-padded at its oldest end to a multiple of TEMPORAL_SCALE steps; the
    decoder crops back to the newest W."""
    w, c = window_shape
    steps = math.ceil(w / TEMPORAL_SCALE)
    pad = steps * TEMPORAL_SCALE - w
    widths = [c] + [filters] * TEMPORAL_LAYERS
    down, up = [], []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        down += [nn.Conv1d(a, b, 4, 2, 1), nn.ReLU()]
        up = [nn.ConvTranspose1d(b, a, 4, 2, 1), nn.ReLU(), *up]
    encoder = nn.Sequential(_TimeAsChannels(), nn.ConstantPad1d((pad, 0), 0.0), *down,
                            nn.Flatten())  # fmt: skip
    decoder = nn.Sequential(nn.Linear(latent_dim, filters * steps), nn.ReLU(),
                            nn.Unflatten(1, (filters, steps)), *up[:-1],
                            _NewestSteps(w))  # fmt: skip
    return encoder, decoder, filters * steps


class _TimeAsChannels(nn.Module):
    def forward(self, x):  # (N, W, C) -> (N, C, W)
        return x.transpose(1, 2)


class _NewestSteps(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):  # (N, C, padded W) -> (N, W, C)
        return x[:, :, -self.w :].transpose(1, 2)


class _Crop(nn.Module):
    def __init__(self, h, w):
        super().__init__()
        self.h, self.w = h, w

    def forward(self, x):
        return x[:, :, : self.h, : self.w]


def kl_divergence(mu, logvar):
    """KL(q(z|x) || N(0, I)) per sample, closed form (Kingma & Welling, appendix B):
    -0.5 * sum(1 + logvar - mu^2 - exp(logvar))."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
