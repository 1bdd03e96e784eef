"""Side check of the twelfth session (MODEL_CARD.md): rank and budget positions by squared error instead of
absolute error, by swapping the router's `position_error` before running the CLI.

    python experiments/rank_by_mse.py {l1,mse} eval ../shared/data/eval/*.mkv --max-frames 48 --threads 1 --json \
        --policy infotok --rate R --normaliser ema --skip 0 --weights W

`l1` runs the CLI unchanged. The EMA normaliser and no skips keep the population means (stored in absolute-error
units) out of the comparison.
"""

from __future__ import annotations

import sys

import torch.nn.functional as F
from torch import Tensor

import livetok.engine.router as router
from livetok.cli import main


def squared_position_error(x: Tensor, recon: Tensor, stride: int) -> Tensor:
    """Mean squared error per latent cell, in [0, 1] units of the 0-255 range, raster order [B, N]."""
    e = ((x - recon) * 0.5).pow(2).mean(dim=1, keepdim=True)
    return F.avg_pool2d(e, stride).flatten(1)


if __name__ == "__main__":
    if sys.argv[1] not in ("l1", "mse"):
        sys.exit("usage: rank_by_mse.py {l1,mse} LIVETOK-ARGS...")
    if sys.argv[1] == "mse":
        router.position_error = squared_position_error  # type: ignore[assignment]
    sys.exit(main(sys.argv[2:]))
