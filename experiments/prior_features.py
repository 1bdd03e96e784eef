"""Issue 23 item 3, step 1: dump what a learned conditional prior could see. For each clip (48 frames,
default sender: learned 0.5): per frame the receiver's decoder hidden state before the frame (the
temporal context), the full-rate token indices, the keep-mask and the keyframe flag.

usage: python experiments/prior_features.py OUT.pt CLIP...
"""

from __future__ import annotations

import sys

import torch

from livetok.engine.checkpoint import load_default
from livetok.engine.config import SenderConfig
from livetok.stream.video_io import read_video

torch.set_num_threads(2)
model = load_default()
sender = SenderConfig()
out = []
for clip in sys.argv[2:]:
    frames, _ = read_video(clip, max_frames=48)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    state = None
    rec = {"clip": clip, "hidden": [], "indices": [], "mask": [], "key": []}
    with torch.no_grad():
        for t in range(x.shape[0]):
            prev_h = state.hidden[0].clone() if state is not None else None
            tok, state = model.encode_step(x[t:t + 1], state, sender)
            key = bool(tok.keyframe[0])
            if prev_h is None or key:
                prev_h = torch.zeros_like(state.hidden[0])
            rec["hidden"].append(prev_h.half())
            rec["indices"].append(tok.indices[0].int())
            rec["mask"].append(tok.mask[0].bool())
            rec["key"].append(key)
    out.append({k: (torch.stack(v) if k in ("hidden", "indices", "mask") else v) for k, v in rec.items()})
    print(clip, int(torch.stack(rec["mask"]).sum()) / len(rec["mask"]), "tokens/frame", flush=True)
torch.save(out, sys.argv[1])
