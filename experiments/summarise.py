"""One line per candidate from `experiments/postrun.sh`'s output (issue 23's marks): PSNR / bits at each learned
point, PSNR at 2 kbit/frame (log-interpolated on the learned points), the bits against x264 at equal PSNR
(x264's zerolatency sweep in docs/rd.json, log-interpolated) at each learned point, and the held frame.

usage: python experiments/summarise.py runs/em-NAME [runs/em-OTHER ...]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from livetok.bench.codecs import bits_at_psnr, psnr_at_bits

POINTS = ("fixed1", "infotok05", "learned05", "learned025", "learned0125", "learned00625", "learned003125",
          "learned0025", "learned00208")


def log_bits(curve: list[tuple[float, float]]) -> list[dict[str, float]]:
    """(PSNR, bits) points as the curve `bits_at_psnr` / `psnr_at_bits` read, with bits in log: interpolated in
    log(bits), as every x264 ratio and 2-kbit figure in docs/ is."""
    return [{"psnr": q, "bits_per_frame": math.log(b)} for q, b in curve]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", type=Path)
    a = p.parse_args()
    sweep = json.loads(Path("docs/rd.json").read_text())["codecs"]["x264"]
    x264 = log_bits([(c["psnr"], c["bits_per_frame"]) for c in sweep])
    for d in a.dirs:
        got = {}
        for name in POINTS:
            f = d / f"{name}.json"
            if f.exists():
                o = json.loads(f.read_text())["overall"]
                got[name] = (o["psnr"], o["bits_per_frame"])
        learned = sorted(v for k, v in got.items() if k.startswith("learned"))  # by PSNR
        cells = [f"{k} {v[0]:.2f}/{v[1]:,.0f}" for k, v in got.items()]
        if len(learned) >= 2:
            # the 2-kbit figure and the best ratio to three places: cycles now differ by less than 0.01 there
            cells.append(f"@2k {psnr_at_bits(log_bits(learned), math.log(2000)):.3f}")
            ratios = [b / math.exp(bits_at_psnr(x264, q)) for q, b in learned]
            cells.append("x264 " + " ".join(f"{r:.2f}x" for r in ratios) + f" best {min(ratios):.3f}x")
        s = d / "static.json"
        if s.exists():
            o = json.loads(s.read_text())
            o = o.get("overall", o)
            cells.append("static " + " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in o.items()))
        print(f"{d.name}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
