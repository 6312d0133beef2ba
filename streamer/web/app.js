// The OR page: sends the camera (or a screen) to the service over WebRTC and shows what the
// assistant publishes, live from GET /events (the same payloads as MQTT). No build step.
// URL parameters: room, token, autostart=1 (start the camera by itself, and again after a lost
// link), share=screen.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const authHeaders = token ? { Authorization: `Bearer ${token}` } : {};
const STALE_EVENTS_MS = 8000; // the server pings every 2 s
const RETRY_MS = 5000; // autostart: try again this long after a failed start or a lost link
const autostart = params.get("autostart") === "1";
const autoKind = params.get("share") === "screen" ? "screen" : "camera";
const $ = (id) => document.getElementById(id);

const state = {
  room: params.get("room") || "",
  config: null,
  clips: new Map(), // index -> {index, action, start_s, end_s}
  rec: null,
  status: null,
  events: null,
  lastEventAt: 0,
  skewMs: 0,
  video: null, // the server's view of this room's WebRTC source (from pings)
  prevVideo: null,
  streamClock: null, // {streamS, wallMs}: the stream time of the latest payload and when it was made
  pc: null,
  stream: null,
  retry: null,
};

function retryLater() {
  if (!autostart || state.retry) return;
  state.retry = setTimeout(() => { state.retry = null; if (!state.pc) share(autoKind); }, RETRY_MS);
}

// ---- helpers -------------------------------------------------------------------------------
function clock(seconds) {
  const s = Math.max(0, seconds || 0);
  return `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
}
function setPill(id, stateName, text) {
  const el = $(id);
  el.dataset.state = stateName;
  el.textContent = text;
}
function serverNow() {
  return Date.now() + state.skewMs;
}
function showError(message) {
  const el = $("error");
  el.hidden = !message;
  el.textContent = message || "";
}
function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "action") node.dataset.action = v;
    else if (k === "style") Object.assign(node.style, v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

// What a recommendation saw of the running clip (its basis): "updated 12 s into the clip, 5 keyframes".
// "Next action expected in 20–90 s": the payload's range when it was published, counted down
// since (the page renders every second). Advisory, like everything on the page.
function nextInText(rec) {
  const range = rec.next_in_s;
  if (!range) return "";
  const since = Math.max(0, (Date.now() - Date.parse(rec.time)) / 1000) || 0;
  const low = Math.max(0, Math.round(range.low - since));
  const high = Math.max(0, Math.round(range.high - since));
  if (high <= 0) return "Next action expected any moment now (past the usual range)";
  return `Next action expected in ${low}\u2013${high} s`;
}

function basisText(basis) {
  if (!basis) return "";
  const n = basis.keyframes;  // a label-only planner sees none: say nothing about frames
  const parts = [...(n ? [`${n} keyframe${n === 1 ? "" : "s"}`] : []), ...(basis.caption ? ["caption"] : [])];
  const seen = parts.map((p) => `, ${p}`).join("");
  return basis.trigger === "refresh"
    ? `updated ${Math.round(basis.clip_elapsed_s)} s into the clip${seen}`
    : `at clip start${seen}`;
}
// A payload of an earlier clip, or an earlier ranking (revision) of the same clip.
function olderThan(p, rec) {
  if (p.clip.index !== rec.clip.index) return p.clip.index < rec.clip.index;
  return (p.basis?.revision ?? 0) < (rec.basis?.revision ?? 0);
}

// ---- server-sent events --------------------------------------------------------------------
function connectEvents() {
  const query = new URLSearchParams({ room: state.room });
  if (token) query.set("token", token);
  const events = new EventSource(`/events?${query}`);
  state.events = events;
  events.onopen = () => { state.lastEventAt = Date.now(); render(); };
  events.onerror = () => render();
  const on = (kind, handler) => events.addEventListener(kind, (e) => {
    state.lastEventAt = Date.now();
    handler(JSON.parse(e.data));
    render();
  });
  on("hello", (p) => {
    state.skewMs = p.server_time * 1000 - Date.now();
    state.clips.clear(); // the server replays the room's state after hello
    state.streamClock = null;
    state.rec = null;
    state.status = null;
  });
  on("ping", (p) => {
    state.prevVideo = state.video;
    state.video = p.video ? { ...p.video, at: p.server_time } : null;
  });
  on("status", (p) => { state.status = p; });
  const tick = (p) => {
    if (p.stream_time_s != null) state.streamClock = { streamS: p.stream_time_s, wallMs: Date.parse(p.time) };
  };
  on("clip", (p) => {
    const c = p.clip;
    const known = state.clips.get(c.index) || {};
    state.clips.set(c.index, { ...known, ...c, event: p.event });
    tick(p);
  });
  on("recommendation", (p) => {
    if (p.refresh && state.rec && olderThan(p, state.rec)) return; // the text of an older ranking
    state.rec = p;
    tick(p);
  });
}

// ---- WebRTC --------------------------------------------------------------------------------
async function share(kind) {
  showError("");
  const cap = state.config.capture;
  const video = {
    width: { ideal: cap.max_width, max: cap.max_width },
    height: { ideal: cap.max_height, max: cap.max_height },
    frameRate: { ideal: cap.max_fps, max: cap.max_fps },
  };
  if (!navigator.mediaDevices) { // only https:// pages and localhost may capture
    setPill("pill-camera", "bad", "Camera: needs HTTPS");
    showError("This browser shares a camera only with an https:// page (or on this machine): "
      + "start the service with service.web.cert_file and key_file, or open it on localhost.");
    return;
  }
  setPill("pill-camera", "busy", kind === "screen" ? "Screen: starting" : "Camera: starting");
  let stream;
  try {
    stream = kind === "screen"
      ? await navigator.mediaDevices.getDisplayMedia({ video, audio: false })
      : await navigator.mediaDevices.getUserMedia({ video, audio: false });
  } catch (err) {
    setPill("pill-camera", "bad", `${kind === "screen" ? "Screen" : "Camera"}: ${err.name}`);
    showError(`Cannot open the ${kind}: ${err.message || err.name}`);
    retryLater();
    return;
  }
  const track = stream.getVideoTracks()[0];
  const pc = new RTCPeerConnection({ iceServers: [] });
  const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  preferVP8(transceiver);
  pc.onconnectionstatechange = () => {
    if (pc !== state.pc) return;
    updateLink();
    if (pc.connectionState === "failed" || pc.connectionState === "closed") {
      showError("The video link to the service was lost.");
      stopSharing();
      retryLater();
    }
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc, 3000);
    const response = await fetch(`/offer?room=${encodeURIComponent(state.room)}`, {
      method: "POST",
      headers: { ...authHeaders, "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    await pc.setRemoteDescription(answer);
  } catch (err) {
    pc.close();
    stream.getTracks().forEach((t) => t.stop());
    setPill("pill-camera", "bad", "Video: not sent");
    showError(`The service did not accept the video: ${err.message}`);
    retryLater();
    return;
  }
  // the server now takes this peer instead of the previous one: close the old one afterwards
  const old = { pc: state.pc, stream: state.stream };
  Object.assign(state, { pc, stream });
  if (old.pc) old.pc.close();
  if (old.stream) old.stream.getTracks().forEach((t) => t.stop());
  $("preview").srcObject = stream;
  $("preview-empty").hidden = true;
  $("btn-stop").disabled = false;
  track.onended = () => { if (state.stream === stream) stopSharing(); };
  setPill("pill-camera", "ok", kind === "screen" ? "Screen: live" : "Camera: live");
  updateLink();
}

function preferVP8(transceiver) {
  if (!transceiver.setCodecPreferences || !RTCRtpSender.getCapabilities) return;
  const codecs = RTCRtpSender.getCapabilities("video").codecs;
  const rank = (c) => (/vp8/i.test(c.mimeType) ? 0 : /rtx|red|ulpfec/i.test(c.mimeType) ? 2 : 1);
  transceiver.setCodecPreferences([...codecs].sort((a, b) => rank(a) - rank(b)));
}

function iceGatheringDone(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs); // send what we have (the service does not trickle)
  });
}

function stopSharing() {
  if (state.pc) state.pc.close();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  Object.assign(state, { pc: null, stream: null });
  $("preview").srcObject = null;
  $("preview-empty").hidden = false;
  $("btn-stop").disabled = true;
  setPill("pill-camera", "idle", "Camera: off");
  updateLink();
}

function updateLink() {
  const s = state.pc ? state.pc.connectionState : "closed";
  const map = { connected: "ok", connecting: "busy", new: "busy", failed: "bad", disconnected: "bad" };
  setPill("pill-link", map[s] || "idle", `Video link: ${state.pc ? s : "not connected"}`);
}

async function sendingStats() {
  let text = "";
  if (state.pc) {
    const report = await state.pc.getStats();
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video" && s.frameWidth) {
        text = `sending ${s.frameWidth}×${s.frameHeight} at ${Math.round(s.framesPerSecond || 0)} fps`;
      }
    });
  }
  const v = state.video;
  const p = state.prevVideo;
  if (v && v.received > 0) {
    const fps = p && v.at > p.at ? (v.received - p.received) / (v.at - p.at) : null;
    const rate = fps === null ? "" : ` at ${fps.toFixed(0)} fps`;
    text += `${text ? " · " : ""}service received ${v.received} frames${rate}, ${v.dropped} dropped`;
  }
  $("video-stats").textContent = text || "\u00a0";
}

// ---- rendering -----------------------------------------------------------------------------
function render() {
  renderBanner();
  renderEngine();
  renderSource();
  renderNow();
  renderRecommendation();
  renderStrip();
}

function renderBanner() {
  const events = state.events;
  const connected = events && events.readyState === EventSource.OPEN
    && Date.now() - state.lastEventAt < STALE_EVENTS_MS;
  setPill("pill-events", connected ? (state.status?.state === "online" ? "ok" : "bad") : "bad",
    connected ? `Assistant: ${state.status?.state || "connected"}` : "Assistant: no connection");
  const rec = state.rec;
  const expired = rec && Date.parse(rec.valid_until) < serverNow();
  let kind = null;
  let text = "";
  if (!connected) [kind, text] = ["offline", "OFFLINE — no connection to the assistant. Do not rely on this screen."];
  else if (state.status?.state === "offline") [kind, text] = ["offline", `OFFLINE — the assistant stopped (${state.status.reason || "no reason given"}).`];
  else if (state.status?.stream === "failed") [kind, text] = ["offline", `FAILED — ${state.status.reason || "the stream failed"}. Recommendations have stopped.`];
  else if (state.status?.stream === "stalled") [kind, text] = ["offline", `VIDEO STALLED — ${state.status.reason || "no video"}. Recommendations are paused until the video returns.`];
  else if (expired) [kind, text] = ["offline", "STALE — the last recommendation has expired. Waiting for the assistant."];
  else if (rec?.degraded) [kind, text] = ["degraded", `DEGRADED — ranking from the sequence prior only (${rec.degraded_reason || "model unavailable"}).`];
  const banner = $("banner");
  banner.hidden = !kind;
  banner.className = `banner ${kind || ""}`;
  banner.textContent = text;
  $("next-panel").classList.toggle("stale", Boolean(kind && kind !== "degraded"));
}

// Engine and model (shortened to fit, in full on hover) and the latency, which always shows.
function renderEngine() {
  const rec = state.rec;
  const source = rec || state.status;
  if (!source?.engine) return;
  const name = `${source.engine} · ${source.model || "?"}`;
  const latency = rec?.latency_ms?.total;
  $("engine-name").textContent = name;
  $("latency").textContent = latency != null ? `latency ${latency.toFixed(0)} ms` : "";
  $("engine").title = latency != null ? `${name} · latency ${latency.toFixed(0)} ms` : name;
}

// A file or RTSP room: what its stream is doing, in place of the camera pills and preview.
const STREAM_WORDS = { running: "playing", ended: "ended", stalled: "stalled", failed: "failed" };
const STREAM_PILL = { running: "ok", ended: "idle", stalled: "bad", failed: "bad" };
function renderSource() {
  if (state.config?.webrtc !== false) return;
  const stream = state.status?.stream;
  const words = STREAM_WORDS[stream] || "waiting for the service";
  setPill("pill-source", STREAM_PILL[stream] || "busy", `Video: ${words}`);
  const box = $("stream-state");
  box.dataset.state = stream || "";
  const time = state.streamClock ? `stream time ${clock(state.streamClock.streamS)}` : "no frame yet";
  const clip = currentClip();
  box.replaceChildren(
    el("span", { class: "what", text: `Video ${words}` }),
    el("span", { class: "detail", text: "from the service's file or camera feed (not this browser)" }),
    el("span", { class: "detail", text: `${time}${clip ? ` · clip ${clip.index + 1}` : ""}` }),
  );
}

function currentClip() {
  let last = null;
  for (const clip of state.clips.values()) if (!last || clip.index > last.index) last = clip;
  return last;
}

function renderNow() {
  const clip = currentClip();
  const action = clip && clip.end_s === undefined ? clip.action : state.rec?.current_action;
  const node = $("now-action");
  node.textContent = action || "Waiting for the first clip";
  node.dataset.action = action || "";
  $("now-meta").textContent = clip
    ? `clip ${clip.index + 1} · since ${clock(clip.start_s)}${clip.end_s !== undefined ? ` · ended ${clock(clip.end_s)}` : ""}`
    : "\u00a0";
}

function renderRecommendation() {
  const rec = state.rec;
  const bars = $("bars");
  if (!rec) {
    bars.replaceChildren(el("li", { class: "placeholder", text: "No recommendation yet" }));
    $("rationale").hidden = true;
    $("rec-meta").textContent = "\u00a0";
    return;
  }
  const best = Math.max(...rec.ranked.map((r) => r.score), 1e-9);
  bars.replaceChildren(...rec.ranked.map((r, i) => el("li", {
    class: `${i === 0 ? "top" : ""} ${r.action === rec.current_action ? "current" : ""}`.trim(),
  }, [
    el("span", { class: "rank", text: String(r.rank) }),
    el("span", { class: "label", text: r.action }),
    el("span", { class: "track" }, [el("span", { class: "fill", action: r.action, style: { width: `${(100 * r.score) / best}%`, display: "block" } })]),
    el("span", { class: "score", text: `${Math.round(100 * r.score)}%` }),
  ])));
  const response = rec.response;
  $("rationale").hidden = !response;
  if (response) {
    const first = (response.next_actions || [])[0] || {};
    $("why").textContent = first.rationale ? `Why ${first.action}: ${first.rationale}` : "";
    $("progress").textContent = response.progress_assessment ? `Progress: ${response.progress_assessment}` : "";
    $("safety").textContent = response.safety_considerations ? `Safety: ${response.safety_considerations}` : "";
  }
  const nextIn = nextInText(rec);
  $("next-in").hidden = !nextIn;
  $("next-in").textContent = nextIn;
  const at = new Date(rec.time).toLocaleTimeString();
  const seen = basisText(rec.basis);
  $("rec-meta").textContent = `during clip ${rec.clip.index + 1} (${rec.current_action})${seen ? ` · ${seen}` : ""} · ${at} · ${rec.engine}${rec.degraded ? " (degraded)" : ""}`;
}

function renderStrip() {
  const clips = [...state.clips.values()].sort((a, b) => a.index - b.index);
  const strip = $("strip");
  if (!clips.length) {
    strip.replaceChildren(el("span", { class: "placeholder", text: "No clips yet" }));
    return;
  }
  const live = state.status?.stream === "running" && state.streamClock;
  const now = live ? state.streamClock.streamS + (serverNow() - state.streamClock.wallMs) / 1000 : 0;
  strip.replaceChildren(...clips.slice(-40).map((c) => {
    const end = c.end_s ?? Math.max(now, c.start_s);
    const running = c.end_s === undefined;
    return el("div", {
      class: `seg${running ? " running" : ""}`,
      action: c.action,
      title: `${c.action} ${clock(c.start_s)}–${running ? "now" : clock(c.end_s)}`,
      style: { flex: `${Math.max(end - c.start_s, 1)} 1 0` },
    }, [c.action, el("small", { text: `${clock(c.start_s)}${running ? " · now" : ` · ${Math.round(end - c.start_s)} s`}` })]);
  }));
}

// ---- start ---------------------------------------------------------------------------------
async function main() {
  const query = new URLSearchParams(state.room ? { room: state.room } : {});
  let config;
  try {
    const response = await fetch(`/config?${query}`, { headers: authHeaders });
    config = await response.json();
    if (!response.ok) throw new Error(config.error || `HTTP ${response.status}`);
  } catch (err) {
    showError(`Cannot reach the service: ${err.message}`);
    setPill("pill-events", "bad", "Assistant: no connection");
    return;
  }
  state.config = config;
  state.room = config.room;
  $("room").textContent = `room ${config.room}`;
  document.title = `llm-sap · ${config.room}`;
  connectEvents();
  if (!config.webrtc) { // the video is the service's own (file, RTSP): no camera here
    for (const id of ["controls", "preview-wrap", "video-stats", "pill-camera", "pill-link"]) $(id).hidden = true;
    $("pill-source").hidden = false;
    $("stream-state").hidden = false;
    render();
  } else {
    $("btn-camera").onclick = () => share("camera");
    $("btn-screen").onclick = () => share("screen");
    $("btn-stop").onclick = () => {
      if (confirm("Stop sending video? The assistant stops following this room until the service restarts.")) {
        stopSharing();
      }
    };
    if (autostart) share(autoKind);
  }
  setInterval(() => { render(); sendingStats(); }, 1000);
}

main();
