// A small live line chart on a plain canvas (no libraries: nothing is downloaded at run time).
"use strict";

class LiveChart {
  constructor(canvas, seconds) {
    this.canvas = canvas;
    this.seconds = seconds;
    this.points = [];  // {t, tokens, kbps, target}
  }

  add(point) {
    this.points.push(point);
    const cutoff = point.t - this.seconds * 1000;
    while (this.points.length && this.points[0].t < cutoff) this.points.shift();
  }

  draw(now) {
    const c = this.canvas, ctx = c.getContext("2d");
    // draw at the canvas's on-screen resolution, so lines stay sharp
    const w = c.clientWidth || c.width, h = c.clientHeight || c.height, dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim() || "#ccc";
    const pad = {l: 48, r: 56, t: 10, b: 22};
    const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
    const maxTok = niceMax(Math.max(1, ...this.points.map((p) => p.tokens)));
    const maxKbps = niceMax(Math.max(1, ...this.points.map((p) => Math.max(p.kbps, p.target || 0))));
    const x = (t) => pad.l + pw * (1 - (now - t) / (this.seconds * 1000));
    ctx.strokeStyle = "rgba(255,255,255,0.08)";
    ctx.fillStyle = color("--muted");
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ph * (1 - i / 4);
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + pw, y); ctx.stroke();
      // each axis in its line's colour: tokens on the left, kbit/s on the right
      ctx.fillStyle = color("--tokens");
      ctx.textAlign = "right"; ctx.fillText(fmt(maxTok * i / 4), pad.l - 6, y + 4);
      ctx.fillStyle = color("--kbps");
      ctx.textAlign = "left"; ctx.fillText(fmt(maxKbps * i / 4), pad.l + pw + 6, y + 4);
    }
    ctx.fillStyle = color("--muted");
    ctx.textAlign = "center";
    for (let s = 0; s <= this.seconds; s += 5) {
      ctx.fillText(s === 0 ? "now" : `-${s}s`, pad.l + pw * (1 - s / this.seconds), h - 6);
    }
    const line = (key, max, name, dash) => {
      ctx.strokeStyle = color(name); ctx.lineWidth = 2; ctx.setLineDash(dash || []);
      ctx.beginPath();
      let started = false;
      for (const p of this.points) {
        if (p[key] == null) continue;
        const px = x(p.t), py = pad.t + ph * (1 - Math.min(p[key], max) / max);
        if (started) ctx.lineTo(px, py); else { ctx.moveTo(px, py); started = true; }
      }
      ctx.stroke(); ctx.setLineDash([]);
    };
    line("target", maxKbps, "--target", [6, 4]);
    line("kbps", maxKbps, "--kbps");
    line("tokens", maxTok, "--tokens");
  }
}

// an axis top whose quarters are round numbers
function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v) {
  return v >= 10 || v === 0 ? String(Math.round(v)) : v.toFixed(1);
}
