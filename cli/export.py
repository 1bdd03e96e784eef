"""`export onnx`: the model as ONNX graphs for other runtimes, with parity and drift checks (--verify)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .options import add_model_args, add_sender_args, open_model, sender_config
from .output import console, print_json

if TYPE_CHECKING:
    from .options import Subparsers


def register(sub: Subparsers) -> None:
    ex = sub.add_parser("export", help="export the model for other runtimes").add_subparsers(dest="export",
                                                                                           metavar="FORMAT")
    xo = ex.add_parser("onnx", help="encoder, decoder and router pass as ONNX graphs + model.json")
    xo.add_argument("-o", "--output", required=True, help="output folder")
    xo.add_argument("--opset", type=int, default=18)
    xo.add_argument("--verify", action="store_true",
                    help="run clips through torch and onnxruntime and across them (parity and drift)")
    xo.add_argument("--clips", nargs="*", default=None, help="clips for --verify (default: the bundled clip)")
    xo.add_argument("--max-frames", type=int, default=None, help="frames per clip for --verify")
    xo.add_argument("--json", action="store_true")
    add_sender_args(xo)  # the policy --verify streams the clips with
    add_model_args(xo, backend=False)
    xo.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(a: argparse.Namespace) -> int:
    from livetok.engine.model import Tokenizer
    from livetok.export.onnx_export import export_onnx

    model = open_model(a)
    assert isinstance(model, Tokenizer)  # export has no --backend: the model is torch's own
    con = console()
    meta = export_onnx(model, a.output, opset=a.opset)
    exporters = {name: g["exporter"] for name, g in meta["graphs"].items()}
    res: dict[str, Any] = {"output": a.output, "model_id": meta["model_id"], "opset": meta["opset"],
                           "exporters": exporters, "seconds": meta["seconds"], "parity": meta.get("parity", [])}
    con.print(f"wrote {a.output}: encoder/decoder/router.onnx + model.json for model {meta['model_id']} "
              f"(opset {meta['opset']}, {', '.join(f'{k} {v}' for k, v in exporters.items())}, "
              f"{meta['seconds']:.1f} s)")
    for p in res["parity"]:  # GraphParity documents
        con.print(f"  onnxruntime vs torch at {p['size']}: indices equal {p['indices_equal']:.4%}, "
                  f"max |diff| {p['max_abs_diff']:.2e}")
    if a.verify:
        from livetok.export.verify import verify
        from livetok.stream.demo import DEMO_CLIP
        from livetok.stream.session import wire_roundtrip
        from livetok.stream.video_io import read_video

        clips = a.clips or [str(DEMO_CLIP)]
        for c in clips:
            if not Path(c).is_file():
                raise ValueError(f"no such file: {c}")
        frames = {Path(c).stem: read_video(c, max_frames=a.max_frames)[0] for c in clips}
        v = verify(model, a.output, frames, sender_config(a), transport=wire_roundtrip(model))
        res["verify"] = v.to_json()
        con.print(f"  verify on {v.providers[0]}:")
        for name, c in v.clips.items():
            con.print(f"  [bold]{name}[/] ({c.frames} frames): indices equal {c.indices_equal:.4%}, "
                      f"PSNR torch {c.psnr_torch:.3f} dB onnx {c.psnr_onnx:.3f} dB, "
                      f"max pixel diff {c.max_abs_pixel_diff}, cross-backend drift "
                      f"{c.torch_to_onnx.psnr_drift:+.4f} / {c.onnx_to_torch.psnr_drift:+.4f} dB")
    if a.json:
        print_json(res)
    return 0
