"""One line per candidate from `experiments/postrun.sh`'s output (issue 23's marks): PSNR / bits at each learned
point, PSNR at 2 kbit/frame (log-interpolated on the learned points), the bits against x264 at equal PSNR
(x264's zerolatency sweep in docs/rd.json, log-interpolated) at each learned point, and the held frame.

usage: python experiments/summarise.py runs/em-NAME [runs/em-OTHER ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

POINTS = ("fixed1", "infotok05", "learned05", "learned025", "learned0125", "learned00625", "learned003125")


def x264_bits_at(psnr: float, rd: Path = Path("docs/rd.json")) -> float:
    """x264's bits per frame at this PSNR, log-interpolated between its sweep's points."""
    pts = sorted((p["psnr"], p["bits_per_frame"]) for p in json.loads(rd.read_text())["codecs"]["x264"])
    return float(np.exp(np.interp(psnr, [q for q, _ in pts], [np.log(b) for _, b in pts])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", type=Path)
    a = p.parse_args()
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
            bits = [b for _, b in learned]
            order = np.argsort(bits)
            at2k = np.interp(np.log(2000), np.log(np.array(bits)[order]), np.array([q for q, _ in learned])[order])
            cells.append(f"@2k {at2k:.2f}")
            cells.append("x264 " + " ".join(f"{b / x264_bits_at(q):.2f}x" for q, b in learned))
        s = d / "static.json"
        if s.exists():
            o = json.loads(s.read_text())
            o = o.get("overall", o)
            cells.append("static " + " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in o.items()))
        print(f"{d.name}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
