"""One checkpoint's trunk with another's budget head: is the head, retrained each cycle, what moves the held frame
and the bottom of the curve from cycle to cycle, and does a head carry over to a later trunk?

usage: python experiments/head_swap.py OUT.safetensors TRUNK.safetensors HEAD.safetensors

Every tensor comes from TRUNK except the budget head's (`budget_head.*`), which come from HEAD. The population means
are TRUNK's; `experiments/postrun.sh` calibrates them again on the result.
"""

from __future__ import annotations

import sys

from livetok.engine.checkpoint import load_weights, save_weights


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit("usage: head_swap.py OUT TRUNK HEAD")
    out, trunk_path, head_path = argv
    trunk, head = load_weights(trunk_path), load_weights(head_path)
    sd = trunk.state_dict()
    swapped = {k: v for k, v in head.state_dict().items() if k.startswith("budget_head.")}
    if not swapped:
        raise SystemExit(f"{head_path} has no budget head")
    sd.update(swapped)
    trunk.load_state_dict(sd)
    save_weights(trunk, out, extra={"trunk": trunk_path, "head": head_path})
    print(f"{out}: trunk {trunk_path}, head {head_path} ({len(swapped)} tensors)")


if __name__ == "__main__":
    main(sys.argv[1:])
