// The openlisten page: live microphone over the WebSocket API, file transcription over REST,
// a word timeline with a player, subtitle downloads. Plain ES modules, no build step.
import { cues, srt, vtt } from "/web/subtitles.js";

const $ = (id) => document.getElementById(id);
const state = { socket: null, recorder: null, stream: null, body: null, file: null, words: [] };

// ---- settings --------------------------------------------------------------------------------
const saved = JSON.parse(localStorage.getItem("openlisten") || "{}");
for (const id of ["key", "language", "smart_format", "diarize", "interim_results"]) {
  const el = $(id);
  if (saved[id] === undefined) continue;
  if (el.type === "checkbox") el.checked = saved[id]; else el.value = saved[id];
}
function remember() {
  const out = {};
  for (const id of ["key", "model", "language", "smart_format", "diarize", "interim_results"]) {
    const el = $(id);
    out[id] = el.type === "checkbox" ? el.checked : el.value;
  }
  localStorage.setItem("openlisten", JSON.stringify(out));
}
document.querySelectorAll("#settings input, #settings select").forEach((el) => el.addEventListener("change", () => { remember(); loadModels(); }));

const key = () => $("key").value.trim();
function params(extra = {}) {
  const p = new URLSearchParams({ model: $("model").value || "", punctuate: "true", ...extra });
  if ($("smart_format").checked) p.set("smart_format", "true");
  if ($("diarize").checked) p.set("diarize", "true");
  if ($("language").value) p.set("language", $("language").value);
  if (!p.get("model")) p.delete("model");
  return p;
}
function authHeaders() { return key() ? { Authorization: `Token ${key()}` } : {}; }
function setStatus(text, kind = "") { const s = $("status"); s.textContent = text; s.className = `status ${kind}`; }

async function loadModels() {
  try {
    const reply = await fetch("/v1/models", { headers: authHeaders() });
    if (reply.status === 401) { setStatus("this server needs an API key", "error"); return; }
    const data = await reply.json();
    // With no choice made yet, the server's default: /v1/models also lists models loaded on
    // first use, and the first in the list may be one that takes seconds to load.
    const select = $("model"), current = select.value || saved.model || data.default || "";
    select.replaceChildren(...data.models.map((m) => new Option(m.name + (m.default ? " (default)" : ""), m.name)));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
    setStatus(`ready · ${data.models.map((m) => m.name).join(", ")}`, "ready");
  } catch (err) { setStatus(`server unreachable: ${err}`, "error"); }
}
loadModels();

// ---- live microphone -------------------------------------------------------------------------
function wordSpans(words, fallback) {
  if (!words || !words.length) return [document.createTextNode(fallback)];
  const spans = [];
  let speaker = null;
  for (const w of words) {
    if (w.speaker !== undefined && w.speaker !== speaker) {
      speaker = w.speaker;
      const tag = document.createElement("span");
      tag.className = `speaker spk-${speaker % 6}`;
      tag.textContent = `S${speaker}`;
      spans.push(tag);
    }
    const span = document.createElement("span");
    span.textContent = (w.punctuated_word || w.word) + " ";
    if (w.speaker !== undefined) span.className = `spk-${w.speaker % 6}`;
    spans.push(span);
  }
  return spans;
}

function onMessage(event) {
  const data = JSON.parse(event.data);
  if (data.type !== "Results") return;
  const alt = data.channel.alternatives[0];
  if (data.is_final) {
    $("interim").textContent = "";
    if (alt.transcript) {
      const line = document.createElement("span");
      line.className = "final";
      line.append(...wordSpans(alt.words, alt.transcript));
      $("finals").append(line);
    }
  } else {
    $("interim").textContent = alt.transcript;
  }
  $("transcript").scrollTop = $("transcript").scrollHeight;
}

$("start").onclick = async () => {
  $("start").disabled = true;
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    $("live-state").textContent = `microphone: ${err.message}`;
    $("start").disabled = false;
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = params({ interim_results: String($("interim_results").checked) });
  // Browsers cannot set headers on a WebSocket: the key travels as the `token` subprotocol.
  const socket = new WebSocket(`${scheme}://${location.host}/v1/listen?${query}`, key() ? ["token", key()] : []);
  state.socket = socket;
  socket.onmessage = onMessage;
  socket.onclose = (e) => {
    $("live-state").textContent = e.code === 1000 ? "stopped" : `closed (${e.code}${e.reason ? ": " + e.reason : ""})`;
    stopCapture();
  };
  socket.onopen = () => {
    const mimeType = MediaRecorder.isTypeSupported("audio/webm;codecs=opus") ? "audio/webm;codecs=opus" : "";
    state.recorder = new MediaRecorder(state.stream, mimeType ? { mimeType } : {});
    state.recorder.ondataavailable = (e) => { if (e.data.size && socket.readyState === WebSocket.OPEN) socket.send(e.data); };
    state.recorder.onstop = () => { if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "CloseStream" })); };
    state.recorder.start(250);
    $("stop").disabled = false;
    $("live-state").textContent = "listening…";
  };
};

function stopCapture() {
  if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
  state.stream?.getTracks().forEach((t) => t.stop());
  state.recorder = null; state.stream = null;
  $("start").disabled = false; $("stop").disabled = true;
}
// Stop recording; the server sends the last finals, then closes the socket itself.
$("stop").onclick = () => { $("live-state").textContent = "finishing…"; stopCapture(); };

// ---- file transcription ----------------------------------------------------------------------
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) transcribeFile(e.dataTransfer.files[0]);
});
$("file-input").addEventListener("change", (e) => { if (e.target.files.length) transcribeFile(e.target.files[0]); });

function transcribeFile(file) {
  state.file = file;
  $("result").hidden = true;
  $("progress-row").hidden = false;
  const progress = $("progress"), text = $("progress-text");
  progress.value = 0; text.textContent = `uploading ${file.name}…`;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/v1/listen?${params({ utterances: "true" })}`);
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) { progress.value = (80 * e.loaded) / e.total; } };
  xhr.upload.onload = () => { progress.value = 80; text.textContent = "transcribing…"; progress.removeAttribute("value"); };
  xhr.onerror = () => { text.textContent = "network error"; };
  xhr.onload = () => {
    let body;
    try { body = JSON.parse(xhr.responseText); } catch { body = { err_msg: xhr.responseText }; }
    if (xhr.status !== 200) { progress.value = 0; text.textContent = `error ${xhr.status}: ${body.err_msg || ""}`; return; }
    progress.value = 100;
    const meta = body.metadata;
    text.textContent = `done · ${meta.duration.toFixed(1)} s of audio`;
    showResult(body);
  };
  xhr.send(file);
}

function showResult(body) {
  state.body = body;
  const alt = body.results.channels[0].alternatives[0];
  state.words = alt.words.map((w) => ({ text: w.punctuated_word || w.word, start: w.start, end: w.end, speaker: w.speaker }));
  const timeline = $("timeline");
  timeline.replaceChildren();
  let speaker = null;
  state.words.forEach((w, i) => {
    if (w.speaker !== undefined && w.speaker !== speaker) {
      speaker = w.speaker;
      const tag = document.createElement("span");
      tag.className = `speaker spk-${speaker % 6}`; tag.textContent = `S${speaker}`;
      timeline.append(tag);
    }
    const span = document.createElement("span");
    span.className = "word" + (w.speaker !== undefined ? ` spk-${w.speaker % 6}` : "");
    span.textContent = w.text; span.dataset.index = i; span.dataset.start = w.start; span.title = `${w.start.toFixed(2)}–${w.end.toFixed(2)} s`;
    span.onclick = () => { $("player").currentTime = w.start; $("player").play(); };
    timeline.append(span, " ");
  });
  const player = $("player");
  if (player.src) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(state.file);
  $("result").hidden = false;
}

// Highlight the word being spoken: on every frame while playing, and on seeks.
let current = -1;
function highlight() {
  const t = $("player").currentTime;
  let index = -1;
  for (let i = 0; i < state.words.length && state.words[i].start <= t; i++) index = i;
  if (index === current) return;
  const spans = $("timeline").querySelectorAll(".word");
  spans[current]?.classList.remove("current");
  current = index;
  if (index >= 0) { spans[index].classList.add("current"); spans[index].scrollIntoView({ block: "nearest" }); }
}
$("player").addEventListener("timeupdate", highlight);
$("player").addEventListener("seeked", highlight);
$("player").addEventListener("play", function loop() { highlight(); if (!$("player").paused) requestAnimationFrame(loop); });

function download(kind) {
  const stem = (state.file?.name || "transcript").replace(/\.[^.]+$/, "");
  const items = cues(state.words);
  const [text, type] = kind === "json" ? [JSON.stringify(state.body, null, 2), "application/json"]
    : kind === "srt" ? [srt(items), "application/x-subrip"] : [vtt(items), "text/vtt"];
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = `${stem}.${kind}`;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
document.querySelectorAll("[data-download]").forEach((b) => b.addEventListener("click", () => download(b.dataset.download)));
