"""Synthetic video with controllable information density, for training, a live `synthetic` source and tests.

A scene is a textured canvas seen through a (panning) camera, with moving sprites; clips add hard cuts
and frozen stretches.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["PRESETS", "SyntheticConfig", "generate_clip", "generate_clip_with_info", "synthetic_frames"]

# Allowed range per field (inclusive); pair fields apply it to both ends.
_RANGES: dict[str, tuple[float, float]] = {
    "height": (16, 4096), "width": (16, 4096), "frames": (1, 1_000_000), "n_shapes": (0, 64),
    "shape_speed": (0.0, 64.0), "spin": (0.0, 45.0), "texture": (0.0, 1.0), "pan_speed": (0.0, 32.0),
    "cut_prob": (0.0, 1.0), "static_prob": (0.0, 1.0), "static_len": (1, 100_000), "noise": (0.0, 64.0),
    "blur": (0.0, 8.0), "drift": (0.0, 0.1),
}
# cv2's stubs give every array result "any numeric dtype"; `cast(_F32, ...)` restates the float32 that the
# call returns for the float32 arrays it is given here.
_F32 = NDArray[np.float32]

_INT_FIELDS = frozenset({"height", "width", "frames", "n_shapes", "static_len"})
_PAIR_FIELDS = frozenset({"n_shapes", "shape_speed", "static_len"})


@dataclass(frozen=True)
class SyntheticConfig:
    """Generator knobs; each one moves the information density of the output.

    Attributes:
        height: Frame height in pixels.
        width: Frame width in pixels.
        frames: Frames per clip for `generate_clip`.
        n_shapes: (min, max) number of moving shapes per scene, inclusive.
        shape_speed: (min, max) shape speed in px/frame.
        spin: Max shape rotation speed in degrees/frame.
        texture: Background texture strength: 0 = flat colour, 1 = rich multi-scale texture.
        pan_speed: Max camera pan speed in px/frame (each scene draws its own speed up to this).
        cut_prob: Per-frame probability of a hard cut to a brand-new scene.
        static_prob: Per-frame probability that a frozen stretch (frames identical to the previous) starts.
        static_len: (min, max) length of a frozen stretch in frames.
        noise: Gaussian sensor-noise sigma in 8-bit levels, fresh every rendered frame.
        blur: Gaussian blur sigma in px (0 = sharp).
        drift: Per-frame std of the log brightness gain (0 = constant brightness).
    """

    height: int = 192
    width: int = 256
    frames: int = 16
    n_shapes: tuple[int, int] = (2, 6)
    shape_speed: tuple[float, float] = (0.5, 3.0)
    spin: float = 1.0
    texture: float = 0.5
    pan_speed: float = 1.0
    cut_prob: float = 0.0
    static_prob: float = 0.0
    static_len: tuple[int, int] = (4, 12)
    noise: float = 0.0
    blur: float = 0.0
    drift: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            name, value = f.name, getattr(self, f.name)
            lo, hi = _RANGES[name]
            is_int, pair = name in _INT_FIELDS, name in _PAIR_FIELDS
            what = ("a (min, max) pair of " if pair else "") + (
                ("integers" if pair else "an integer") if is_int else ("numbers" if pair else "a number"))
            msg = f"SyntheticConfig.{name} must be {what} in [{lo}, {hi}], got {value!r}"
            if pair and (not isinstance(value, tuple | list) or len(value) != 2):
                raise ValueError(msg)
            ok = (int, np.integer) if is_int else (int, float, np.integer, np.floating)
            for v in value if pair else (value,):
                if isinstance(v, bool) or not isinstance(v, ok) or not (math.isfinite(v) and lo <= v <= hi):
                    raise ValueError(msg)
            if pair and value[0] > value[1]:
                raise ValueError(f"SyntheticConfig.{name} must have min <= max, got {value!r}")
            # Plain Python numbers (and tuples, not lists) keep the frozen config hashable and cv2-friendly.
            cast = int if is_int else float
            object.__setattr__(self, name, tuple(cast(v) for v in value) if pair else cast(value))


PRESETS: dict[str, SyntheticConfig] = {
    # Nothing moves and nothing is random per frame, so every frame equals frame 0.
    "static": SyntheticConfig(n_shapes=(2, 5), shape_speed=(0.0, 0.0), spin=0.0, texture=0.6, pan_speed=0.0),
    "calm": SyntheticConfig(n_shapes=(1, 3), shape_speed=(0.2, 0.8), spin=0.3, texture=0.15, pan_speed=0.0),
    "busy": SyntheticConfig(n_shapes=(8, 16), shape_speed=(3.0, 8.0), spin=4.0, texture=1.0, pan_speed=4.0,
                            noise=3.0, drift=0.01),
    "cuts": SyntheticConfig(n_shapes=(2, 6), shape_speed=(1.0, 3.0), spin=1.0, texture=0.6, pan_speed=1.0,
                            cut_prob=0.15, noise=1.0),
    "mixed": SyntheticConfig(n_shapes=(0, 8), shape_speed=(0.3, 4.0), spin=2.0, texture=0.6, pan_speed=1.5,
                             cut_prob=0.03, static_prob=0.03, noise=1.5, blur=0.3, drift=0.005),
}


def _colour(rng: np.random.Generator, hue: float | None = None) -> _F32:
    """A random RGB colour (float32, 0..255), near `hue` when given so scenes get a coherent palette."""
    h = rng.random() if hue is None else (hue + rng.normal(0.0, 0.06)) % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(0.15, 0.85), rng.uniform(0.2, 0.95))
    return np.array(rgb, np.float32) * 255.0


def _mix(base: _F32, a: _F32, da: _F32, b: _F32 | None = None, db: _F32 | None = None) -> _F32:
    """Per channel k: base[k] + a*da[k] + b*db[k], as float32 [h, w, 3].

    Works plane by plane with cv2 because numpy broadcasting over a trailing axis of 3 is ~10x slower.
    """
    if b is None or db is None:
        b, db = a, np.zeros(3, np.float32)
    planes = [cv2.addWeighted(a, float(da[k]), b, float(db[k]), float(base[k])) for k in range(3)]
    return cast(_F32, cv2.merge(planes))


def _uniform_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float = 1.0) -> _F32:
    """Zero-mean uniform noise of standard deviation `std`: 4x cheaper than Gaussian, as good for texture."""
    return (rng.random(shape, np.float32) - np.float32(0.5)) * np.float32(std * math.sqrt(12.0))


def _fbm(h: int, w: int, rng: np.random.Generator, octaves: int, cell: float, persist: float) -> _F32:
    """Multi-octave smoothed noise, float32 [h, w] of amplitude ~1; each octave halves the cell size.

    Built coarse to fine (upsample, add detail) so the cost is about one full-size resize, not one per octave.
    """
    gh, gw = max(2, round(h / cell) + 1), max(2, round(w / cell) + 1)
    out: _F32 = _uniform_noise(rng, (gh, gw))
    amp, total = 1.0, 1.0
    for _ in range(octaves - 1):
        if 2 * gh > h / 1.5 and 2 * gw > w / 1.5:  # finer than the pixel grid adds only aliasing
            break
        gh, gw, amp = 2 * gh, 2 * gw, amp * persist
        detail = _uniform_noise(rng, (gh, gw))
        out = cast(_F32, cv2.scaleAdd(detail, amp, cv2.resize(out, (gw, gh), interpolation=cv2.INTER_CUBIC)))
        total += amp
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_CUBIC) * np.float32(1.0 / total)


def _fill(h: int, w: int, rng: np.random.Generator, hue: float) -> _F32:
    """A float32 [h, w, 3] fill: flat, stripes, checker, noise or gradient between two colours."""
    c1 = _colour(rng, hue)
    c2 = _colour(rng, None if rng.random() < 0.3 else hue)
    kind = int(rng.integers(5))
    if kind == 0:
        return np.broadcast_to(c1, (h, w, 3)).copy()
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    cos, sin = np.float32(math.cos(t := rng.uniform(0.0, math.pi))), np.float32(math.sin(t))
    u = xs * cos + ys * sin
    if kind == 1:
        v = np.sin(u * np.float32(2.0 * math.pi / rng.uniform(3.0, 24.0)))
        v = np.clip(v * np.float32(0.5 * rng.uniform(1.0, 6.0)) + 0.5, 0.0, 1.0)  # soft sine .. hard bars
    elif kind == 2:
        cell = np.float32(rng.uniform(3.0, 20.0))
        v = (np.floor(u / cell) + np.floor((ys * cos - xs * sin) / cell)) % 2.0
    elif kind == 3:
        n = _fbm(h, w, rng, 4, max(h, w) / rng.uniform(1.0, 4.0), 0.6)
        v = (n - n.min()) / (np.ptp(n) + 1e-6)
    else:
        v = (u - u.min()) / (np.ptp(u) + 1e-6)
    return _mix(c1, v.astype(np.float32), c2 - c1)


def _make_canvas(h: int, w: int, texture: float, rng: np.random.Generator) -> _F32:
    """A scene background, float32 [h, w, 3] in 0..255; `texture` scales every non-flat component."""
    hue = float(rng.random())
    base = _colour(rng, hue)
    if texture <= 0.0:
        return np.broadcast_to(base, (h, w, 3)).copy()
    c1, c2 = _colour(rng, hue), _colour(rng)
    octaves = 1 + round(5 * texture)  # richer texture reaches down to finer scales
    a = _fbm(h, w, rng, octaves, max(h, w) / 2.0, 0.4 + 0.25 * texture)
    b = _fbm(h, w, rng, octaves, max(h, w) / 4.0, 0.4 + 0.25 * texture)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    ramp = (xs * np.float32(math.cos(theta)) + ys * np.float32(math.sin(theta))) / np.float32(max(h, w))
    a = (a * np.float32(0.7) + (ramp - ramp.mean()) * np.float32(0.8)) * np.float32(texture)  # sky/ground-ish
    canvas = _mix(base, a, c1 - base, b, (c2 - base) * (0.6 * texture))
    for _ in range(int(rng.poisson(12.0 * texture))):  # man-made looking patches: walls, signs, windows
        ph, pw = int(rng.integers(h // 16 + 2, h // 2 + 3)), int(rng.integers(w // 16 + 2, w // 2 + 3))
        y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        mask = np.zeros((ph, pw), np.uint8)
        shape = int(rng.integers(3))
        if shape == 0:
            mask[:] = 255
        elif shape == 1:
            cv2.ellipse(mask, (((pw - 1) / 2, (ph - 1) / 2), (pw, ph), 0.0), 255, -1, cv2.LINE_AA)
        else:
            pts = np.stack([rng.uniform(0, pw, 5), rng.uniform(0, ph, 5)], 1)
            cv2.fillPoly(mask, [cv2.convexHull((pts * 16).astype(np.int32))], 255, cv2.LINE_AA, 4)
        alpha = mask.astype(np.float32) * np.float32(rng.uniform(0.6, 1.0) / 255.0)
        region = canvas[y0:y0 + ph, x0:x0 + pw]
        region[:] = cv2.blendLinear(_fill(ph, pw, rng, hue), region, alpha, 1.0 - alpha)
    # Fine grain is part of the scene (it moves with pans), unlike per-frame sensor noise.
    grain = _uniform_noise(rng, (h, w), 8.0 * texture)
    canvas += cv2.merge([grain] * 3)
    return np.clip(canvas, 0.0, 255.0, out=canvas)


def _make_sprite(size: float, rng: np.random.Generator) -> _F32:
    """A shape within radius `size` of the centre, float32 [S, S, 4]: premultiplied RGB and 1 - alpha.

    Everything stays inside that radius, so the sprite rotates without clipping and without the extra
    padding (and warp cost) a bounding box's diagonal would need.
    """
    side = 2 * math.ceil(size) + 4
    c = (side - 1) / 2.0
    mask = np.zeros((side, side), np.uint8)
    kind = int(rng.integers(6))
    if kind in (0, 5):  # disc or ring
        cv2.circle(mask, (round(c * 16), round(c * 16)), round(size * 16), 255, -1, cv2.LINE_AA, 4)
        if kind == 5:
            hole = round(size * rng.uniform(0.35, 0.7) * 16)
            cv2.circle(mask, (round(c * 16), round(c * 16)), hole, 0, -1, cv2.LINE_AA, 4)
    elif kind == 1:
        cv2.ellipse(mask, ((c, c), (2 * size, 2 * size * rng.uniform(0.35, 1.0)), 0.0), 255, -1, cv2.LINE_AA)
    else:
        if kind == 2:  # rectangle
            phi = rng.uniform(0.25, 0.75 * math.pi / 2)  # corner on the circle of radius `size`
            hw, hh = size * math.cos(phi), size * math.sin(phi)
            pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        else:  # star-convex polygon or star
            n = int(rng.integers(3, 8))
            if kind == 3:
                ang, rad = np.sort(rng.uniform(0, 2 * math.pi, n)), size * rng.uniform(0.7, 1.0, n)
            else:
                ang = np.linspace(0, 2 * math.pi, 2 * n, endpoint=False)
                rad = size * np.tile([1.0, rng.uniform(0.35, 0.6)], n)
            pts = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
        cv2.fillPoly(mask, [((pts + c) * 16).round().astype(np.int32)], 255, cv2.LINE_AA, 4)
    rgb = _fill(side, side, rng, float(rng.random()))
    if kind == 0 and rng.random() < 0.6:  # ball-like shading
        ax = (np.arange(side, dtype=np.float32) - np.float32(c - 0.3 * size)) / np.float32(size)
        shade = np.clip(1.15 - 0.35 * (ax[:, None] ** 2 + ax[None, :] ** 2), 0.3, 1.2)
        rgb = cast(_F32, cv2.multiply(rgb, cv2.merge([shade] * 3)))
    if rng.random() < 0.4:  # inner outline in a contrasting colour
        k = int(rng.integers(1, 4))
        edge = (mask - cv2.erode(mask, np.ones((2 * k + 1, 2 * k + 1), np.uint8))).astype(np.float32) / 255.0
        rgb = cast(_F32, cv2.blendLinear(np.broadcast_to(_colour(rng), rgb.shape).copy(), rgb, edge, 1.0 - edge))
    alpha = mask.astype(np.float32) / np.float32(255.0)
    premultiplied = cv2.multiply(np.clip(rgb, 0.0, 255.0), cv2.merge([alpha] * 3))
    return cast(_F32, cv2.merge([*cv2.split(premultiplied), 1.0 - alpha]))


class _Scene:
    """One shot: a canvas, a camera drifting over it and shapes bouncing inside it (world coordinates)."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        h, w = cfg.height, cfg.width
        # Pans need a canvas larger than the frame; shapes live on the canvas, so they move with the world.
        self.margin = math.ceil(0.2 * max(h, w)) if cfg.pan_speed > 0 else 0
        ch, cw = h + 2 * self.margin, w + 2 * self.margin
        self.canvas = _make_canvas(ch, cw, cfg.texture, rng)
        self.cam = rng.uniform(0, 2 * self.margin, 2)
        pan = cfg.pan_speed * rng.uniform(0.2, 1.0)
        ang = rng.uniform(0, 2 * math.pi)
        self.cam_vel = np.array([pan * math.cos(ang), pan * math.sin(ang)])
        n = int(rng.integers(cfg.n_shapes[0], cfg.n_shapes[1] + 1))
        self.sprites = [_make_sprite(rng.uniform(0.04, 0.16) * min(h, w), rng) for _ in range(n)]
        self.pos = rng.uniform(0, 1, (n, 2)) * np.array([cw, ch])
        speed = rng.uniform(cfg.shape_speed[0], cfg.shape_speed[1], n)
        ang_s = rng.uniform(0, 2 * math.pi, n)
        self.vel = np.stack([speed * np.cos(ang_s), speed * np.sin(ang_s)], 1)
        self.angle = rng.uniform(0, 360, n)
        self.spin = rng.uniform(-cfg.spin, cfg.spin, n)
        self.log_gain = 0.0
        self.size = np.array([cw, ch], np.float64)

    def step(self) -> None:
        """Advance one frame: camera wander, shape motion with border bounces, brightness drift."""
        cfg, rng = self.cfg, self.rng
        if cfg.pan_speed > 0:
            self.cam_vel += rng.normal(0.0, 0.03 * cfg.pan_speed, 2)  # slow hand-held wander
            speed = float(np.hypot(*self.cam_vel))
            if speed > cfg.pan_speed:
                self.cam_vel *= cfg.pan_speed / speed
            self.cam += self.cam_vel
            for i in range(2):
                if not 0 <= self.cam[i] <= 2 * self.margin:
                    self.cam[i] = np.clip(self.cam[i], 0, 2 * self.margin)
                    self.cam_vel[i] = -self.cam_vel[i]
        self.pos += self.vel
        out = (self.pos < 0) | (self.pos > self.size)
        self.vel[out] = -self.vel[out]
        np.clip(self.pos, 0, self.size, out=self.pos)
        self.angle += self.spin
        if cfg.drift > 0:
            self.log_gain = float(np.clip(0.97 * self.log_gain + rng.normal(0.0, cfg.drift), -0.4, 0.4))

    def render(self, noise: _F32 | None) -> NDArray[np.uint8]:
        """The current view as uint8 RGB [H, W, 3], with `noise` (float32 [H, W, 3] or None) added last."""
        h, w = self.cfg.height, self.cfg.width
        frame: _F32
        if self.margin:  # sub-pixel pan
            m = np.array([[1.0, 0.0, -self.cam[0]], [0.0, 1.0, -self.cam[1]]])
            frame = cast(_F32, cv2.warpAffine(self.canvas, m, (w, h), flags=cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_REFLECT))
        else:
            frame = self.canvas.copy()
        views = self.pos - self.cam
        for sprite, (px, py), angle in zip(self.sprites, views, self.angle, strict=True):
            side = sprite.shape[0]
            tx, ty = px - (side - 1) / 2.0, py - (side - 1) / 2.0
            ix, iy = math.floor(tx), math.floor(ty)
            x0, y0, x1, y1 = max(ix, 0), max(iy, 0), min(ix + side, w), min(iy + side, h)
            if x0 >= x1 or y0 >= y1:
                continue
            centre = ((side - 1) / 2.0, (side - 1) / 2.0)
            m = cast(NDArray[np.float64], cv2.getRotationMatrix2D(centre, float(angle), 1.0))
            m[:, 2] += (tx - ix, ty - iy)  # the fractional part of the position, for smooth slow motion
            # One 4-channel warp, then contiguous 3-channel planes for cv2 (cheaper than two 3-channel warps).
            warped = cv2.warpAffine(sprite, m, (side, side), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 1))
            warped = warped[y0 - iy:y1 - iy, x0 - ix:x1 - ix]
            src = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)
            keep = cv2.cvtColor(cv2.extractChannel(warped, 3), cv2.COLOR_GRAY2RGB)
            region = frame[y0:y1, x0:x1]  # premultiplied "over": dst * (1 - a) + src
            cv2.multiply(region, keep, dst=region)
            cv2.add(region, src, dst=region)
        if self.cfg.blur > 0:
            frame = cast(_F32, cv2.GaussianBlur(frame, (0, 0), self.cfg.blur))
        if self.log_gain:
            frame *= np.float32(math.exp(self.log_gain))
        if noise is not None:
            frame += noise
        frame += 0.5  # round rather than truncate
        return np.clip(frame, 0.0, 255.0, out=frame).astype(np.uint8)


class _Stream:
    """Frame-by-frame clip logic shared by the clip and endless APIs: cuts, frozen stretches, motion."""

    _NOISE_PAD = 32

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self.scene = _Scene(cfg, rng)
        self.prev: NDArray[np.uint8] | None = None
        self.frozen_left = 0
        # Fresh Gaussian noise per frame costs ~2 ms at 192x256; random crops and flips of one padded bank
        # are statistically the same for a tokenizer at a tenth of the cost.
        self.noise_bank: _F32 | None = None
        if cfg.noise > 0:
            shape = (cfg.height + self._NOISE_PAD, cfg.width + self._NOISE_PAD, 3)
            self.noise_bank = rng.standard_normal(shape, np.float32) * np.float32(cfg.noise)

    def _noise(self) -> _F32 | None:
        if self.noise_bank is None:
            return None
        dy, dx, flip = (int(v) for v in self.rng.integers(0, (self._NOISE_PAD + 1,) * 2 + (4,)))
        view = self.noise_bank[dy:dy + self.cfg.height, dx:dx + self.cfg.width]
        return view[:: 1 - 2 * (flip & 1), :: 1 - 2 * (flip >> 1)]

    def next(self) -> tuple[NDArray[np.uint8], bool]:
        """Returns (frame, is_cut); a frozen frame is the previous array itself (callers copy)."""
        cfg, rng = self.cfg, self.rng
        cut = False
        if self.prev is None:
            pass
        elif rng.random() < cfg.cut_prob:  # a cut also ends any frozen stretch
            self.scene, self.frozen_left, cut = _Scene(cfg, rng), 0, True
        elif self.frozen_left > 0:
            self.frozen_left -= 1
            return self.prev, False
        elif rng.random() < cfg.static_prob:
            self.frozen_left = int(rng.integers(cfg.static_len[0], cfg.static_len[1] + 1)) - 1
            return self.prev, False
        else:
            self.scene.step()
        self.prev = self.scene.render(self._noise())
        return self.prev, cut


def generate_clip_with_info(
    cfg: SyntheticConfig, rng: np.random.Generator
) -> tuple[NDArray[np.uint8], dict[str, list[int]]]:
    """Generates one clip and reports where its scene cuts and static frames are.

    Args:
        cfg: Generator configuration (see `PRESETS`).
        rng: Source of all randomness; the same seed gives byte-identical output.

    Returns:
        frames: uint8 RGB array [cfg.frames, cfg.height, cfg.width, 3].
        info: {"cuts": sorted frame indices t where frame t starts a new scene (t >= 1),
               "static": sorted indices t >= 1 where frame t is byte-identical to frame t-1}.
    """
    stream = _Stream(cfg, rng)
    out = np.empty((cfg.frames, cfg.height, cfg.width, 3), np.uint8)
    cuts: list[int] = []
    static: list[int] = []
    for t in range(cfg.frames):
        out[t], cut = stream.next()
        if cut:
            cuts.append(t)
        elif t > 0 and np.array_equal(out[t], out[t - 1]):
            static.append(t)
    return out, {"cuts": cuts, "static": static}


def generate_clip(cfg: SyntheticConfig, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Generates one clip as uint8 RGB frames [cfg.frames, cfg.height, cfg.width, 3].

    Args:
        cfg: Generator configuration (see `PRESETS`).
        rng: Source of all randomness; the same seed gives byte-identical output.

    Returns:
        The frames; the first frame always opens a fresh scene.
    """
    return generate_clip_with_info(cfg, rng)[0]


def synthetic_frames(cfg: SyntheticConfig, seed: int | None = None, *, chain_clips: bool = False
                     ) -> Iterator[NDArray[np.uint8]]:
    """Endless stream of uint8 RGB frames [cfg.height, cfg.width, 3] for a live `synthetic` source.

    By default one scene carries on until a `cfg.cut_prob` cut (a live source should not jump every
    `cfg.frames` frames). Either way the first `cfg.frames` frames equal
    `generate_clip(cfg, np.random.default_rng(seed))`.

    Args:
        cfg: Generator configuration (see `PRESETS`).
        seed: Seed for `np.random.default_rng`; None for a fresh random stream.
        chain_clips: Chain independent `generate_clip` clips instead: a new scene every `cfg.frames`.

    Yields:
        One new array per frame (safe to keep or modify).
    """
    rng = np.random.default_rng(seed)
    if chain_clips:
        while True:
            yield from generate_clip(cfg, rng)
    stream = _Stream(cfg, rng)
    while True:
        yield stream.next()[0].copy()
