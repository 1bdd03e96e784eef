// The livetok webcam demo: camera -> server (tokenized live) -> reconstruction + heat-map back,
// with per-frame stats on a data channel. `window.livetok` exposes the live state (tests read it).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const PROBE_CELLS = {cols: 4, rows: 3};  // latency probe: 10-bit frame code + 2 parity bits

const stats = window.livetok = {
  state: "starting", message: "", reconFrames: 0, heatFrames: 0, serverDecoded: 0, tokens: null,
  tokensPerFrame: null, kbps: null, kbpsMean: null, fps: null, targetKbps: null, requestedKbps: null,
  reachable: null, serverMsP50: null, serverMsP99: null,
  positions: null, width: null, height: null, dropped: 0, history: [], probe: {latencies: []},
};

const chart = new LiveChart($("chart"), 30);
let pc = null, channel = null, config = null, camera = null;

function setState(state, message) {
  stats.state = state;
  stats.message = message || "";
  const el = $("status");
  el.className = `status ${state}`;
  el.textContent = message || state;
}

function showNoCamera(title, text) {
  $("nocamera-title").textContent = title;
  $("nocamera-text").textContent = text;
  $("nocamera").hidden = false;
  setState("no-camera", title);
}

// -- the rate slider: logarithmic between the server's limits --------------------------------

function sliderToKbps(v) {
  const lo = Math.log(config.min_kbps), hi = Math.log(config.max_kbps);
  return Math.exp(lo + (hi - lo) * v / 1000);
}

function kbpsToSlider(kbps) {
  const lo = Math.log(config.min_kbps), hi = Math.log(config.max_kbps);
  return Math.round(1000 * (Math.log(kbps) - lo) / (hi - lo));
}

function fmtKbps(kbps) {
  return kbps < 10 ? kbps.toFixed(1) : String(Math.round(kbps));
}

function showTarget(kbps) {
  stats.targetKbps = kbps;
  $("rate-value").textContent = `${fmtKbps(kbps)} kbit/s`;
}

// what the server measured the stream can reach (its floor and ceiling of tokens per frame, priced
// on its own frames, times the frame rate it really runs at); a request beyond it runs at the bound
function showReach() {
  const el = $("reach"), r = stats.reachable;
  if (!r) {
    el.textContent = "reachable: measuring…";
    el.className = "reach";
    return;
  }
  let text = `lowest reachable: ${fmtKbps(r[0])} kbit/s, highest: ${fmtKbps(r[1])} kbit/s ` +
             `(at ${fmtKbps(stats.fps || 0)} frames/s: the model keeps at least its floor of tokens per frame, ` +
             "at most all of them)";
  const asked = stats.requestedKbps, target = stats.targetKbps;
  const clipped = asked !== null && target !== null && Math.abs(asked - target) > 0.01 * asked;
  if (clipped) text += ` — ${fmtKbps(asked)} kbit/s is out of reach: the stream runs at ${fmtKbps(target)} kbit/s`;
  el.textContent = text;
  el.className = clipped ? "reach clipped" : "reach";
}

function onSlider() {
  const kbps = sliderToKbps(Number($("rate").value));
  showTarget(kbps);
  if (channel && channel.readyState === "open") channel.send(JSON.stringify({type: "target", kbps}));
}

// -- stats from the server ---------------------------------------------------------------------

function onMessage(event) {
  let msg;
  try { msg = JSON.parse(event.data); } catch (e) { return; }
  if (msg.type === "frame") {
    const now = performance.now();
    stats.serverDecoded = msg.decoded;
    stats.tokens = msg.tokens;
    stats.positions = msg.positions;
    stats.kbps = msg.kbps;
    stats.kbpsMean = msg.kbps_mean;
    stats.reachable = msg.reachable_kbps;
    stats.requestedKbps = msg.requested_kbps;
    stats.fps = msg.fps;
    stats.serverMsP50 = msg.server_ms_p50;
    stats.serverMsP99 = msg.server_ms_p99;
    stats.width = msg.width;
    stats.height = msg.height;
    stats.dropped = msg.dropped;
    stats.history.push({t: now, frame: msg.frame, tokens: msg.tokens, kbps: msg.kbps, kbpsMean: msg.kbps_mean,
                        meanSpan: msg.kbps_mean_s, bits: msg.bits, target: msg.target_kbps,
                        requested: msg.requested_kbps, reachable: msg.reachable_kbps, keyframe: msg.keyframe});
    if (stats.history.length > 2000) stats.history.splice(0, stats.history.length - 2000);
    const recent = stats.history.filter((p) => now - p.t < 1000);
    stats.tokensPerFrame = recent.reduce((s, p) => s + p.tokens, 0) / recent.length;
    chart.add({t: now, tokens: msg.tokens, kbps: msg.kbps, target: msg.target_kbps});
    $("n-tokens").textContent = `${Math.round(stats.tokensPerFrame)} / ${msg.positions}`;
    $("n-kbps").textContent = msg.kbps.toFixed(1);
    $("n-kbps-mean").textContent = msg.kbps_mean.toFixed(1);
    showTarget(msg.target_kbps);
    showReach();
    $("n-fps").textContent = msg.fps.toFixed(1);
    $("n-latency").textContent = `${Math.round(msg.server_ms_p50)} ms`;
    $("n-decoded").textContent = String(msg.decoded);
  } else if (msg.type === "target") {
    // the server's target: the request, or the reachable bound it runs into (the slider moves there)
    stats.requestedKbps = msg.requested_kbps;
    showTarget(msg.kbps);
    if (Math.abs(sliderToKbps(Number($("rate").value)) - msg.kbps) > 0.01 * msg.kbps) {
      $("rate").value = String(kbpsToSlider(msg.kbps));
    }
    showReach();
  } else if (msg.type === "error") {
    setState("error", `server: ${msg.message}`);
  }
}

function drawLoop() {
  chart.draw(performance.now());
  requestAnimationFrame(drawLoop);
}

// -- counting (and, in probe mode, timing) the frames that come back --------------------------

function countFrames(video, key, onFrame) {
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return false;
  const step = (now, meta) => {
    stats[key] += 1;
    if (stats.state === "connecting" || stats.state === "connected") setState("streaming", "streaming");
    if (onFrame) onFrame(now, meta);
    video.requestVideoFrameCallback(step);
  };
  video.requestVideoFrameCallback(step);
  return true;
}

async function pollInboundFrames() {
  // fallback for browsers without requestVideoFrameCallback: decoded frames from getStats
  if (!pc) return;
  const report = await pc.getStats();
  const decoded = [];
  report.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") decoded.push(s.framesDecoded || 0); });
  if (decoded.length) {
    stats.reconFrames = decoded[0];
    stats.heatFrames = decoded[1] || 0;
    if (stats.reconFrames > 0 && stats.state === "connecting") setState("streaming", "streaming");
  }
}

// probe mode (?probe=1): the "camera" is a canvas whose cells spell a frame code; the server sends
// back, at the moment each reconstruction is decoded, the camera frame it was decoded for, so the
// code read back times the whole round trip (VP8, network, tokenize, decode, VP8, network, shown)
const probe = {painted: new Map(), seen: new Set(), canvas: null, reader: null, counter: 0};

function probeCamera(width, height) {
  const c = document.createElement("canvas");
  c.width = width; c.height = height;
  const ctx = c.getContext("2d");
  const cw = width / PROBE_CELLS.cols, ch = height / PROBE_CELLS.rows;
  const paint = () => {
    const code = probe.counter++ % 1024;
    const bits = probeBits(code);
    for (let i = 0; i < bits.length; i++) {
      ctx.fillStyle = bits[i] ? "#ebebeb" : "#101010";
      ctx.fillRect((i % PROBE_CELLS.cols) * cw, Math.floor(i / PROBE_CELLS.cols) * ch, cw, ch);
    }
    probe.painted.set(code, performance.now());
  };
  paint();
  setInterval(paint, 1000 / 30);
  probe.canvas = c;
  return c.captureStream(30);
}

function probeBits(code) {
  const bits = [];
  for (let i = 0; i < 10; i++) bits.push((code >> i) & 1);
  bits.push(bits.filter((_, i) => i % 2 === 0).reduce((a, b) => a ^ b, 0));
  bits.push(bits.filter((_, i) => i % 2 === 1 && i < 10).reduce((a, b) => a ^ b, 0));
  return bits;
}

function probeRead(video, meta) {
  const w = video.videoWidth, h = video.videoHeight;
  if (!w || !h) return;
  if (!probe.reader) probe.reader = document.createElement("canvas").getContext("2d", {willReadFrequently: true});
  const ctx = probe.reader;
  ctx.canvas.width = w; ctx.canvas.height = h;
  ctx.drawImage(video, 0, 0, w, h);
  const cw = w / PROBE_CELLS.cols, ch = h / PROBE_CELLS.rows, bits = [];
  for (let i = 0; i < PROBE_CELLS.cols * PROBE_CELLS.rows; i++) {
    const x = (i % PROBE_CELLS.cols) * cw + cw / 4, y = Math.floor(i / PROBE_CELLS.cols) * ch + ch / 4;
    const d = ctx.getImageData(Math.round(x), Math.round(y), Math.round(cw / 2), Math.round(ch / 2)).data;
    let sum = 0;
    for (let j = 0; j < d.length; j += 4) sum += d[j] + d[j + 1] + d[j + 2];
    const mean = sum / (3 * d.length / 4);
    if (mean > 90 && mean < 165) return;  // a cell between codes: no reading from this frame
    bits.push(mean >= 128 ? 1 : 0);
  }
  let code = 0;
  for (let i = 0; i < 10; i++) code |= bits[i] << i;
  const expect = probeBits(code);
  if (expect[10] !== bits[10] || expect[11] !== bits[11] || probe.seen.has(code)) return;
  const t0 = probe.painted.get(code);
  if (t0 === undefined) return;
  probe.seen.add(code);
  if (probe.seen.size > 512) probe.seen.clear();
  const shown = meta && meta.presentationTime ? meta.presentationTime : performance.now();
  stats.probe.latencies.push(shown - t0);
}

// -- connecting ---------------------------------------------------------------------------------

async function getCamera() {
  if (params.get("probe") === "1") return probeCamera(config.width, config.height);
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showNoCamera("No camera access on this address",
                 `Browsers allow cameras only on secure pages: open the demo as localhost:${location.port || 80} ` +
                 `or 127.0.0.1:${location.port || 80} on this machine, or serve it over HTTPS.`);
    return null;
  }
  try {
    return await navigator.mediaDevices.getUserMedia({
      video: {width: {ideal: 640}, height: {ideal: 480}, frameRate: {ideal: 30}}, audio: false});
  } catch (e) {
    const texts = {
      NotAllowedError: ["Camera blocked", "This page was not allowed to use the camera. Allow it (the camera icon " +
                        "in the address bar) and try again."],
      NotFoundError: ["No camera found", "Connect a camera and try again."],
      NotReadableError: ["Camera busy", "Another application is using the camera. Close it and try again."],
      OverconstrainedError: ["No usable camera", "The camera does not offer a usable video mode."],
    };
    const [title, text] = texts[e.name] || ["Camera unavailable", `${e.name}: ${e.message}`];
    showNoCamera(title, text);
    return null;
  }
}

function waitForGathering(peer, timeoutMs) {
  // the server does not trickle candidates: the offer must carry them all
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { peer.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (peer.iceGatheringState === "complete") done(); };
    peer.addEventListener("icegatheringstatechange", check);
    setTimeout(done, timeoutMs);
  });
}

async function start() {
  $("nocamera").hidden = true;
  setState("starting", "asking for the camera…");
  camera = await getCamera();
  if (!camera) return;
  $("original").srcObject = camera;
  setState("connecting", "connecting…");
  pc = new RTCPeerConnection({iceServers: []});
  channel = pc.createDataChannel("livetok-stats");
  channel.onmessage = onMessage;
  channel.onopen = () => { $("rate").disabled = false; onSlider(); };
  const [track] = camera.getVideoTracks();
  const camTx = pc.addTransceiver(track, {direction: "sendrecv", streams: [camera]});
  const heatTx = pc.addTransceiver("video", {direction: "recvonly"});
  pc.ontrack = (e) => {
    const el = e.transceiver === heatTx ? $("heat") : $("recon");
    el.srcObject = new MediaStream([e.track]);
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "failed") setState("error", "the connection to the server failed");
    if (pc.connectionState === "disconnected") setState("error", "the server went away");
  };
  void camTx;
  await pc.setLocalDescription(await pc.createOffer());
  await waitForGathering(pc, 3000);
  const headers = {"Content-Type": "application/json"};
  if (params.get("token")) headers.Authorization = `Bearer ${params.get("token")}`;
  const r = await fetch("offer", {method: "POST", headers,
                                  body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer",
                                                       probe: params.get("probe") === "1"})});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    setState("error", `the server refused: ${body.error || r.status}`);
    return;
  }
  await pc.setRemoteDescription(body);
  const probing = params.get("probe") === "1";
  if (!countFrames($("recon"), "reconFrames", probing ? (now, meta) => probeRead($("recon"), meta) : null) ||
      !countFrames($("heat"), "heatFrames", null)) {
    setInterval(pollInboundFrames, 500);
  }
}

async function main() {
  try {
    config = await (await fetch("config.json")).json();
  } catch (e) {
    setState("error", "cannot reach the livetok server");
    return;
  }
  $("rate").value = String(kbpsToSlider(config.target_kbps));
  showTarget(config.target_kbps);
  $("rate").addEventListener("input", onSlider);
  $("retry").addEventListener("click", () => { start().catch(fail); });
  requestAnimationFrame(drawLoop);
  await start();
}

function fail(e) {
  setState("error", `error: ${e && e.message ? e.message : e}`);
}

main().catch(fail);
