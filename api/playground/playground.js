// The Ringline playground: a browser call to an agent over WebRTC, push-to-talk, with the call's live
// transcript and per-turn latency from its events socket. No build step, no dependencies.

const API = "/api/v1";
const KEY_STORAGE = "ringline.playground.key";
const GATHER_TIMEOUT_MS = 3000;
const STAGES = [
  ["user_stopped", "you stopped speaking"],
  ["stt_final", "STT final"],
  ["turn_committed", "turn committed"],
  ["llm_first_token", "LLM first token"],
  ["tts_first_audio", "TTS first audio"],
  ["first_audio_sent", "first audio out"],
];

const $ = (id) => document.getElementById(id);
const state = { pc: null, mic: null, events: null, callId: null, stats: {}, audio: null, timer: null };
window.playground = state; // for tests and the curious: state.stats is the latest inbound-rtp audio stats

function setStatus(text, kind = text) {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

function headers() {
  return { "Authorization": `Bearer ${$("api-key").value.trim()}`, "Content-Type": "application/json" };
}

async function api(method, path, body) {
  const resp = await fetch(API + path, { method, headers: headers(), body: body && JSON.stringify(body) });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(json.error || `${method} ${path}: ${resp.status}`);
  return json.data;
}

async function loadAgents() {
  const select = $("agent");
  try {
    const { default: fallback, agents } = await api("GET", "/webrtc/agents");
    select.replaceChildren(...agents.map((a) => new Option(a.source === "api" ? `${a.name} (API)` : a.name, a.id)));
    select.value = fallback;
    setStatus("ready", "idle");
  } catch (err) {
    setStatus(err.message, "failed");
  }
}

// ---- the call ----------------------------------------------------------------------------------

async function startCall() {
  sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
  $("connect").disabled = true;
  $("transcript").replaceChildren();
  $("waterfall").replaceChildren();
  setStatus("connecting");
  try {
    const media = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    state.mic = media.getAudioTracks()[0];
    state.mic.enabled = $("open-mic").checked;
    const pc = (state.pc = new RTCPeerConnection({ iceServers: [] }));
    meter(media, $("mic-level"));
    const transceiver = pc.addTransceiver(state.mic, { direction: "sendrecv", streams: [media] });
    const codec = $("codec").value;
    if (codec && transceiver.setCodecPreferences) {
      const all = RTCRtpReceiver.getCapabilities("audio").codecs;
      transceiver.setCodecPreferences(all.filter((c) => c.mimeType.toLowerCase() === `audio/${codec.toLowerCase()}`));
    }
    pc.ontrack = (event) => {
      const stream = event.streams[0] || new MediaStream([event.track]);
      $("remote").srcObject = stream;
      meter(stream, $("agent-level"));
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === "connected") onConnected();
      else if (s === "failed") setStatus("connection failed", "failed");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const answer = await api("POST", "/webrtc/offer", {
      sdp: pc.localDescription.sdp, type: "offer", agent: $("agent").value || undefined,
    });
    state.callId = answer.call_id;
    $("call-id").textContent = `${answer.call_id} · ${answer.codec}`;
    openEvents(answer.events_url);
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    $("hangup").disabled = false;
    state.timer = setInterval(pollStats, 500);
  } catch (err) {
    setStatus(err.message, "failed");
    hangUp();
  }
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, GATHER_TIMEOUT_MS); // send what was gathered so far
  });
}

function onConnected() {
  setStatus("connected");
  $("talk").disabled = $("open-mic").checked;
}

function hangUp() {
  clearInterval(state.timer);
  if (state.pc) state.pc.close();
  if (state.mic) state.mic.stop();
  state.pc = state.mic = null;
  $("connect").disabled = false;
  $("hangup").disabled = true;
  $("talk").disabled = true;
  if (state.callId) setStatus("hung up", "idle");
}

function talking(on) {
  if (!state.mic || $("talk").disabled) return;
  state.mic.enabled = on;
  $("talk").classList.toggle("pressed", on);
}

// ---- the events socket -------------------------------------------------------------------------

function openEvents(path) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = (state.events = new WebSocket(`${scheme}://${location.host}${path}`));
  ws.onmessage = (msg) => onEvent(JSON.parse(msg.data));
  ws.onclose = () => { state.events = null; };
}

function onEvent({ type, data }) {
  switch (type) {
    case "status":
      if (data.status === "ended") { hangUp(); setStatus("call ended", "idle"); }
      break;
    case "transcript":
      interim(data.final ? null : data.text);
      break;
    case "message":
      if (data.role === "user" || data.role === "assistant") {
        interim(null);
        line(data.role, data.content + (data.interrupted ? " …" : ""));
      }
      break;
    case "speech":
      $("agent-level").classList.toggle("speaking", data.state === "started");
      break;
    case "latency":
      waterfall(data);
      break;
    case "fault":
      line("system", `${data.stage}: ${data.detail}`);
      break;
    case "stream_end":
      setStatus("call ended", "idle");
      break;
  }
}

function line(role, text, extra = "") {
  const li = document.createElement("li");
  li.className = `${role} ${extra}`.trim();
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = { user: "you", assistant: "agent", system: "fault" }[role];
  li.append(who, document.createTextNode(text));
  $("transcript").append(li);
  return li;
}

function interim(text) {
  const old = $("transcript").querySelector("li.interim");
  if (old) old.remove();
  if (text) line("user", text, "interim");
}

function waterfall(turn) {
  const marks = STAGES.map(([key, label]) => [key, label, key === "user_stopped" ? 0 : turn[key]]);
  const scale = Math.max(500, ...marks.map(([, , ms]) => ms ?? 0));
  const box = document.createElement("div");
  box.className = "turn";
  box.dataset.turn = turn.turn;
  const title = document.createElement("h3");
  title.textContent = `Turn ${turn.turn}`;
  box.append(title);
  for (const [key, label, ms] of marks) {
    const row = document.createElement("div");
    row.className = `stage ${key}` + (ms == null ? " missing" : "");
    row.dataset.stage = key;
    const name = document.createElement("span");
    name.textContent = label;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = `fill ${key}`;
    fill.style.width = `${Math.max(0, ms ?? 0) / scale * 100}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "ms";
    value.textContent = ms == null ? "—" : `${Math.round(ms)}`;
    row.append(name, track, value);
    box.append(row);
  }
  const empty = $("waterfall").querySelector(".empty");
  if (empty) empty.remove();
  $("waterfall").prepend(box);
}

// ---- levels and stats --------------------------------------------------------------------------

function meter(stream, bar) {
  const ctx = (state.audio ||= new AudioContext());
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const draw = () => {
    analyser.getFloatTimeDomainData(samples);
    const rms = Math.sqrt(samples.reduce((sum, x) => sum + x * x, 0) / samples.length);
    bar.style.width = `${Math.min(100, rms * 400)}%`;
    if (state.pc) requestAnimationFrame(draw);
  };
  draw();
}

async function pollStats() {
  if (!state.pc) return;
  const report = await state.pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      state.stats = {
        packetsReceived: s.packetsReceived, bytesReceived: s.bytesReceived,
        totalAudioEnergy: s.totalAudioEnergy || 0, jitter: s.jitter,
      };
      const el = $("audio-in");
      el.dataset.packets = s.packetsReceived;
      el.dataset.bytes = s.bytesReceived;
      el.dataset.energy = (s.totalAudioEnergy || 0).toFixed(4);
      el.textContent = `audio in: ${s.packetsReceived} packets, ${(s.bytesReceived / 1024).toFixed(1)} kB` +
        `, jitter ${Math.round((s.jitter || 0) * 1000)} ms`;
    }
  });
}

// ---- wiring ------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  if ($("api-key").value) loadAgents();
  $("api-key").addEventListener("change", loadAgents);
  $("connect").addEventListener("click", startCall);
  $("hangup").addEventListener("click", hangUp);
  $("open-mic").addEventListener("change", (e) => {
    if (state.mic) state.mic.enabled = e.target.checked;
    $("talk").disabled = e.target.checked || !state.pc;
  });
  const talk = $("talk");
  talk.addEventListener("pointerdown", () => talking(true));
  for (const ev of ["pointerup", "pointerleave", "pointercancel"]) talk.addEventListener(ev, () => talking(false));
  document.addEventListener("keydown", (e) => {
    if (e.code === "Space" && !e.repeat && e.target.tagName !== "INPUT") { e.preventDefault(); talking(true); }
  });
  document.addEventListener("keyup", (e) => { if (e.code === "Space") talking(false); });
});
