"""Effective receptive field (Luo et al. 2016, "Understanding the Effective Receptive Field in
Deep Convolutional Neural Networks"), measured by gradients.

The centre unit of the output feature map (summed over channels) is backpropagated to the
input; the absolute input gradient, summed over colour channels and averaged over a few random
inputs, is the ERF. It is normalised to a maximum of 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def _feature(out, key: str | None) -> torch.Tensor:
    if torch.is_tensor(out):
        return out
    if key is None:
        key = next(iter(out))  # "0": the single map, or the finest FPN level
    return out[key]


def effective_receptive_field(
    model: nn.Module,
    input_size: int = 128,
    n_inputs: int = 4,
    key: str | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The ERF of ``model`` (a backbone, or a detector whose ``.backbone`` is used) as an
    ``input_size`` x ``input_size`` array in [0, 1]. ``key`` picks a map of a dict output."""
    net = getattr(model, "backbone", model)
    was_training = net.training
    net.eval()  # norm layers use their statistics; frozen stages still pass gradients
    gen = torch.Generator().manual_seed(seed)
    p = next(net.parameters())
    total = torch.zeros(input_size, input_size)
    try:
        for _ in range(n_inputs):
            x = torch.randn(1, 3, input_size, input_size, generator=gen).to(p.device)
            x.requires_grad_(True)
            feat = _feature(net(x), key)
            h, w = feat.shape[-2:]
            feat[0, :, h // 2, w // 2].sum().backward()
            total += x.grad.detach().abs().sum(dim=1)[0].cpu()
    finally:
        net.train(was_training)
    erf = total / n_inputs
    peak = erf.max()
    return (erf / peak if peak > 0 else erf).numpy()


def erf_radius(erf: np.ndarray, fraction: float = 0.95) -> int:
    """Half-side (px) of the smallest centred square holding ``fraction`` of the ERF mass."""
    h, w = erf.shape
    cy, cx = h // 2, w // 2
    total = erf.sum()
    if total <= 0:
        return 0
    for r in range(max(h, w)):
        if erf[max(cy - r, 0) : cy + r + 1, max(cx - r, 0) : cx + r + 1].sum() >= fraction * total:
            return r
    return max(h, w)


def plot_erf(erf: np.ndarray, path: str | Path, title: str = "effective receptive field") -> Path:
    """Save the ERF as a PNG heatmap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4.4))
    im = ax.imshow(erf, cmap="magma")
    fig.colorbar(im, ax=ax, label="normalised |d out / d in|")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
