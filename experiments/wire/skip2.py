# skip mode measured with the engine's own rule: python experiments/wire/skip2.py W SKIP [POLICY] [RATE]
import sys, glob, numpy as np, torch
from livetok.engine.config import BudgetConfig, SenderConfig
from livetok.export.backends import open_runtime
from livetok.stream.evaluate import run_frames, summarize
from livetok.stream.video_io import read_video
torch.set_num_threads(1)
W, SKIP = sys.argv[1], float(sys.argv[2])
pol = sys.argv[3] if len(sys.argv) > 3 else "learned"; rate = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
model = open_runtime("torch", W, None, "cpu", 1)
sender = SenderConfig(budget=BudgetConfig(policy=pol, rate=rate, skip_fraction=SKIP))
busy_all, sb, bb, marks, skips = [], [], [], [], 0
for p in sorted(glob.glob("../shared/data/eval/*.mkv")):
    fr = read_video(p, 48)[0]
    busy = run_frames(model, list(fr), sender)
    still = run_frames(model, [fr[0]] * len(fr), sender)
    busy_all += busy; skips += sum(r.k == 0 for r in busy)
    sb.append(np.mean([r.bits for r in still if not r.keyframe])); bb.append(np.mean([r.bits for r in busy if not r.keyframe]))
    marks.append([still[m].psnr for m in (0, 1, 5, 15, 30)] + [still[-1].psnr])
    print(p.split('/')[-1], round(sb[-1]), round(bb[-1]), [round(float(x), 2) for x in marks[-1]], [r.k for r in still[:24]], flush=True)
s = summarize(busy_all)
print("SKIP", SKIP, pol, rate, "eval", round(s.psnr, 3), round(s.bits_per_frame), "skipped busy frames", skips, "static/busy", round(np.mean(sb) / np.mean(bb), 3), np.round(np.mean(marks, 0), 2))
