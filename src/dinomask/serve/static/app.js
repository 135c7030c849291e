// dinomask web page: make a reference (paint its background or upload a mask), then stream
// camera, video or image frames through the WebSocket and show result + heatmap.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { photo: null, maskFile: null, painted: false, reference: null, ws: null, running: false,
                frames: 0, times: [], lastStats: null, source: null };
window.dinomask = state; // read by the end-to-end test

const tokenInput = $("token");
tokenInput.value = localStorage.getItem("dinomask-token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("dinomask-token", tokenInput.value));
const authHeaders = () => (tokenInput.value ? { Authorization: "Bearer " + tokenInput.value } : {});

function status(id, text, error = false) { const el = $(id); el.textContent = text; el.classList.toggle("error", error); }

// ---------------------------------------------------------------- reference painting
const canvas = $("ref-canvas"), ctx = canvas.getContext("2d");
const paint = document.createElement("canvas"), pctx = paint.getContext("2d"); // alpha 255 = painted background
let drawing = false;

function redraw() {
  if (!state.photo) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(state.photo, 0, 0);
  ctx.save();
  ctx.globalAlpha = 0.55;
  ctx.drawImage(paint, 0, 0);
  if (state.maskLayer) ctx.drawImage(state.maskLayer, 0, 0, canvas.width, canvas.height);
  ctx.restore();
}

// An uploaded mask, drawn over the photo as painted background would be (a preview of how the
// server reads it: alpha where there is transparency, else non-zero for a hard mask of a few
// values, else above half the range; see MASK_RULE in dinomask/preprocess.py).
async function maskLayer(file, width, height) {
  const bitmap = await createImageBitmap(file);
  const m = document.createElement("canvas"); m.width = width; m.height = height;
  const mctx = m.getContext("2d");
  mctx.drawImage(bitmap, 0, 0, width, height);
  const data = mctx.getImageData(0, 0, width, height), px = data.data;
  let transparent = false; const values = new Set();
  for (let i = 0; i < px.length; i += 4) {
    if (px[i + 3] < 255) transparent = true;
    if (values.size <= 64) values.add(Math.max(px[i], px[i + 1], px[i + 2]));
  }
  const hard = values.size <= 64;
  let object = 0;
  for (let i = 0; i < px.length; i += 4) {
    const v = Math.max(px[i], px[i + 1], px[i + 2]);
    const isObject = transparent ? px[i + 3] > 127 : (hard ? v > 0 : v > 127);
    object += isObject ? 1 : 0;
    px[i] = 255; px[i + 1] = 45; px[i + 2] = 85; px[i + 3] = isObject ? 0 : 255;
  }
  mctx.putImageData(data, 0, 0);
  return { layer: m, share: object / (width * height) };
}

$("photo").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  state.photoFile = file;
  state.photo = await createImageBitmap(file);
  canvas.width = paint.width = state.photo.width;
  canvas.height = paint.height = state.photo.height;
  pctx.clearRect(0, 0, paint.width, paint.height);
  state.painted = false;
  state.maskLayer = state.maskFile ? (await maskLayer(state.maskFile, canvas.width, canvas.height).catch(() => null))?.layer : null;
  redraw();
  $("make-ref").disabled = false;
  status("ref-status", `${file.name}: ${state.photo.width}×${state.photo.height}. Paint the background, upload a mask, or create the reference as it is.`);
});
$("mask").addEventListener("change", async (e) => {
  state.maskFile = e.target.files[0] || null;
  state.maskLayer = null;
  if (!state.maskFile) { redraw(); return; }
  if (!state.photo) { status("ref-status", `mask ${state.maskFile.name} will be used; upload the photo to see it`); return; }
  try {
    const { layer, share } = await maskLayer(state.maskFile, canvas.width, canvas.height);
    state.maskLayer = layer;
    redraw();
    status("ref-status", `mask ${state.maskFile.name}: the object is ${(100 * share).toFixed(1)}% of the photo (the background tinted red); it replaces any painting`);
  } catch (err) {
    status("ref-status", `mask ${state.maskFile.name} could not be read by the browser: ${err.message}`, true);
  }
});
$("clear-paint").addEventListener("click", () => { pctx.clearRect(0, 0, paint.width, paint.height); state.painted = false; redraw(); });

function brushAt(ev) {
  const r = canvas.getBoundingClientRect();
  const x = (ev.clientX - r.left) * canvas.width / r.width, y = (ev.clientY - r.top) * canvas.height / r.height;
  const size = Number($("brush").value) * canvas.width / r.width;
  const erase = document.querySelector('input[name="tool"]:checked').value === "erase";
  pctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
  pctx.fillStyle = "#ff2d55";
  pctx.beginPath(); pctx.arc(x, y, size / 2, 0, Math.PI * 2); pctx.fill();
  state.painted = true;
  redraw();
}
canvas.addEventListener("pointerdown", (e) => { if (!state.photo) return; drawing = true; canvas.setPointerCapture(e.pointerId); brushAt(e); });
canvas.addEventListener("pointermove", (e) => { if (drawing) brushAt(e); });
canvas.addEventListener("pointerup", () => { drawing = false; });

function paintedMaskBlob() {
  // object = not painted: white where the painting's alpha is 0
  const m = document.createElement("canvas"); m.width = paint.width; m.height = paint.height;
  const mctx = m.getContext("2d");
  const src = pctx.getImageData(0, 0, paint.width, paint.height), out = mctx.createImageData(paint.width, paint.height);
  for (let i = 0; i < src.data.length; i += 4) {
    const v = src.data[i + 3] > 0 ? 0 : 255;
    out.data[i] = out.data[i + 1] = out.data[i + 2] = v; out.data[i + 3] = 255;
  }
  mctx.putImageData(out, 0, 0);
  return new Promise((resolve) => m.toBlob(resolve, "image/png"));
}

$("make-ref").addEventListener("click", async () => {
  const form = new FormData();
  form.append("image", state.photoFile);
  if (state.maskFile) form.append("mask", state.maskFile);
  else if (state.painted) form.append("mask", await paintedMaskBlob(), "painted-mask.png");
  form.append("label", $("label").value || "object");
  status("ref-status", "computing features…");
  const response = await fetch("/v1/references", { method: "POST", body: form, headers: authHeaders() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { status("ref-status", `${response.status}: ${JSON.stringify(body.detail)}`, true); return; }
  state.reference = body.id;
  $("camera").disabled = false;
  ["undo", "reset", "add-view", "download"].forEach((id) => { $(id).disabled = false; });
  status("ref-status", `reference ${body.id} ready: ${body.object_patches} object patches` +
         (body.background_patches ? `, ${body.background_patches} background patches from its scene` : ""));
});

// ---------------------------------------------------------------- streaming
const video = $("video"), grab = document.createElement("canvas"), gctx = grab.getContext("2d");
const threshold = $("threshold"), autoThreshold = $("auto-threshold");

function thresholdValue() { return autoThreshold.checked ? "auto" : threshold.value; }
function updateThresholdLabel() { $("threshold-value").textContent = thresholdValue(); threshold.disabled = autoThreshold.checked; }
function sendThreshold() { updateThresholdLabel(); if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify({ threshold: thresholdValue() })); }
threshold.addEventListener("input", sendThreshold);
autoThreshold.addEventListener("change", sendThreshold);

function openSocket() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const params = new URLSearchParams({ reference: state.reference, method: $("method").value,
                                      background: $("background").value, threshold: thresholdValue() });
  if (tokenInput.value) params.set("token", tokenInput.value);
  const ws = new WebSocket(`${proto}://${location.host}/v1/stream?${params}`);
  ws.binaryType = "blob";
  let expect = 0, pendingResolve = null;
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      if (msg.error) { status("stream-status", `${msg.status}: ${msg.error}`, true); if (pendingResolve && msg.status) { pendingResolve(); pendingResolve = null; } return; }
      if (msg.frame === undefined) return; // threshold acknowledgements
      state.lastStats = msg; expect = 2;
      $("result-stats").textContent = `frame ${msg.frame} · ${msg.latency_ms.toFixed(0)} ms · object ${(100 * msg.mask_fraction).toFixed(1)}% of the frame · rule ${msg.rule}`;
      return;
    }
    const url = URL.createObjectURL(ev.data);
    const img = expect === 2 ? $("result") : $("heat");
    const old = img.src; img.src = url; if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    expect -= 1;
    if (expect === 0) {
      state.frames += 1;
      if (state.frames === 1) {  // the first result: bring it into view (it is below the fold on a laptop)
        const box = $("result-panel").getBoundingClientRect();
        if (box.top > window.innerHeight * 0.5) $("result-panel").scrollIntoView({ behavior: "smooth", block: "start" });
      }
      const now = performance.now(); state.times.push(now); while (state.times.length > 20) state.times.shift();
      if (state.times.length > 1) $("fps").textContent = `${((state.times.length - 1) * 1000 / (now - state.times[0])).toFixed(1)} FPS`;
      if (pendingResolve) { pendingResolve(); pendingResolve = null; }
    }
  };
  ws.onclose = (ev) => { if (state.running) status("stream-status", `stream closed (${ev.code}) ${ev.reason || ""}`, ev.code !== 1000); stop(); };
  ws.waitForResult = () => new Promise((resolve) => { pendingResolve = resolve; });
  return new Promise((resolve, reject) => { ws.onopen = () => resolve(ws); ws.onerror = () => reject(new Error("websocket failed")); });
}

async function sendCanvas(source, width, height) {
  const scale = Math.min(1, 960 / Math.max(width, height));
  grab.width = Math.round(width * scale); grab.height = Math.round(height * scale);
  gctx.drawImage(source, 0, 0, grab.width, grab.height);
  const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
  state.lastFrame = blob; // what a click or "add this view" refers to
  const done = state.ws.waitForResult();
  state.ws.send(blob);
  await done; // one frame in flight: the newest frame is sent as soon as the last result is back
}

async function runVideo() {
  while (state.running && (state.source === "camera" || !video.ended)) {
    if (video.readyState >= 2) await sendCanvas(video, video.videoWidth, video.videoHeight);
    else await new Promise((r) => setTimeout(r, 30));
  }
  if (state.source !== "camera") stop();
}

async function start(kind) {
  if (!state.reference) return;
  try { state.ws = await openSocket(); } catch (e) { status("stream-status", e.message, true); return; }
  state.running = true; state.source = kind;
  $("stop").disabled = false;
  status("stream-status", `streaming from ${kind}`);
}

$("camera").addEventListener("click", async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    video.srcObject = stream; await video.play();
  } catch (e) { status("stream-status", `camera: ${e.message}`, true); return; }
  await start("camera");
  runVideo();
});

$("media").addEventListener("change", async (e) => {
  const files = [...e.target.files];
  if (!files.length || !state.reference) { status("stream-status", "create a reference first", true); return; }
  await start(files[0].type.startsWith("video") ? "video" : "images");
  if (state.source === "video") {
    video.srcObject = null; video.src = URL.createObjectURL(files[0]); await video.play(); runVideo();
  } else {
    for (const file of files) { if (!state.running) break; const bmp = await createImageBitmap(file); await sendCanvas(bmp, bmp.width, bmp.height); }
    stop();
  }
});

function stop() {
  state.running = false;
  if (video.srcObject) { video.srcObject.getTracks().forEach((t) => t.stop()); video.srcObject = null; }
  if (state.ws && state.ws.readyState <= 1) state.ws.close(1000);
  $("stop").disabled = true;
}
$("stop").addEventListener("click", stop);
updateThresholdLabel();

// ---------------------------------------------------------------- teaching
function taught(body) {
  state.taught = body;
  status("teach-status", `taught: ${body.object_clicks} object click(s), ${body.background_clicks} background click(s), ` +
         `${body.views_added} added view(s)`);
}

async function teach(path, form) {
  const response = await fetch(`/v1/references/${state.reference}/${path}`, { method: "POST", body: form, headers: authHeaders() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { status("teach-status", `${response.status}: ${JSON.stringify(body.detail)}`, true); return null; }
  taught(body);
  return body;
}

function click(ev, background) {
  ev.preventDefault();
  if (!state.reference || !state.lastFrame) { status("teach-status", "stream some frames first, then click the result", true); return; }
  const img = $("result"), r = img.getBoundingClientRect();
  const x = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width)), y = Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height));
  const form = new FormData();
  form.append("image", state.lastFrame, "frame.jpg");
  form.append("points", JSON.stringify([[x, y]]));
  form.append("kind", background ? "background" : "object");
  teach("points", form);
}
$("result").addEventListener("click", (ev) => click(ev, ev.shiftKey));
$("result").addEventListener("contextmenu", (ev) => click(ev, true));
$("undo").addEventListener("click", () => teach("undo"));
$("reset").addEventListener("click", () => teach("reset"));
$("add-view").addEventListener("click", () => {
  if (!state.lastFrame) { status("teach-status", "stream some frames first", true); return; }
  const form = new FormData();
  form.append("image", state.lastFrame, "frame.jpg"); // its mask: the current result's, computed by the server
  teach("views", form);
});
$("download").addEventListener("click", async () => {
  const response = await fetch(`/v1/references/${state.reference}/download`, { headers: authHeaders() });
  if (!response.ok) { status("teach-status", `${response.status}: download failed`, true); return; }
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url; a.download = `${$("label").value || "reference"}.npz`;
  document.body.appendChild(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
});

// Random weights: said on the page itself, so a screenshot never shows meaningless masks as results.
async function checkWeights() {
  try {
    const response = await fetch("/v1/health", { headers: authHeaders() });
    if (!response.ok) return;
    const health = await response.json();
    const banner = $("random-banner");
    if (health.random_weights) {
      banner.textContent = `RANDOM WEIGHTS (${health.random_weights}): model ${health.model}; these masks mean nothing.`;
      banner.hidden = false;
    } else banner.hidden = true;
  } catch (e) { /* the page still works; the server says it in /v1/health */ }
}
checkWeights();
tokenInput.addEventListener("change", checkWeights);
