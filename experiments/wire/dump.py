# dump (mask, indices, keyframe, bits) per frame for each eval clip: python experiments/wire/dump.py WEIGHTS POLICY RATE OUT.npz
import sys, glob, numpy as np, torch
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.export.backends import open_runtime
from livetok.stream.evaluate import run_frames
from livetok.stream.video_io import VideoReader
torch.set_num_threads(1)
w, pol, rate, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
model = open_runtime("torch", w, None, "cpu", 1)
sender = SenderConfig(budget=BudgetConfig(policy=pol, rate=rate))
res = {}
for p in sorted(glob.glob("../shared/data/eval/*.mkv")):
    masks, idx, kf, bits = [], [], [], []
    def cb(f, enc, o, rec):
        masks.append(enc.packet.mask.copy()); idx.append(enc.packet.indices.astype(np.int64)); kf.append(enc.packet.keyframe); bits.append(rec.bits)
    with VideoReader(p) as r:
        fr = (f for i, f in enumerate(r) if i < 48)
        run_frames(model, fr, sender, r.fps, on_frame=cb, receiver=False)
    name = p.split('/')[-1][:-4]
    res[name + "_mask"] = np.stack(masks); res[name + "_kf"] = np.array(kf); res[name + "_bits"] = np.array(bits)
    res[name + "_idx"] = np.concatenate(idx); res[name + "_k"] = np.array([len(i) for i in idx])
    print(name, np.mean(bits), flush=True)
np.savez(out, **res)
