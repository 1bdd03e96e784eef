"""Average the weights of fine-tunes that share one start (a "model soup", Wortsman et al. 2022).

usage: python experiments/soup.py OUT.safetensors A.safetensors B.safetensors [...]

Two cycles from the same weights on different batches (`TRAIN_ARGS="--seed 1" experiments/cycle.sh`) land in one
basin; their mean is often better than either. Floating tensors are averaged, integer buffers come from the first
file. The population means are averaged too, but `experiments/postrun.sh` calibrates them again on the result.
"""

from __future__ import annotations

import sys

import torch

from livetok.engine.checkpoint import load_weights, save_weights


def main(argv: list[str]) -> None:
    out, *paths = argv
    if len(paths) < 2:
        raise SystemExit("usage: soup.py OUT A B [...]")
    models = [load_weights(p) for p in paths]
    sds = [m.state_dict() for m in models]
    mean = {}
    for k, v in sds[0].items():
        if v.is_floating_point():
            mean[k] = torch.stack([sd[k].float() for sd in sds]).mean(0).to(v.dtype)
        else:
            mean[k] = v
    models[0].load_state_dict(mean)
    save_weights(models[0], out, extra={"soup": paths})
    print(f"{out}: mean of {len(paths)}")


if __name__ == "__main__":
    main(sys.argv[1:])
