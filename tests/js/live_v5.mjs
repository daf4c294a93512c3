// JS SDK v5 (new DeepgramClient + listen.v1.connect) against openlisten.
// usage: node live_v5.mjs BASE_URL KEY PCM16_FILE
// Prints one JSON line: {finals, interims, metadata, closeCode, opens}.
import { readFileSync } from "node:fs";
import { DeepgramClient } from "dg5";

const [baseUrl, apiKey, file] = process.argv.slice(2);
const audio = readFileSync(file);
const client = new DeepgramClient({ apiKey, baseUrl });
const out = { finals: [], interims: 0, metadata: null, closeCode: null, opens: 0, errors: [] };
const timer = setTimeout(() => finish(1), 90000);

function finish(code) {
  clearTimeout(timer);
  console.log(JSON.stringify(out));
  process.exit(code);
}

const socket = await client.listen.v1.connect({
  model: "nova-3",
  encoding: "linear16",
  sample_rate: 16000,
  interim_results: "true",
  smart_format: "true",
});
socket.on("open", async () => {
  out.opens += 1;
  if (out.opens > 1) return; // a reconnect would mean the server closed with a code != 1000
  const chunk = 3200;
  for (let i = 0; i < audio.length; i += chunk) {
    socket.sendMedia(audio.subarray(i, i + chunk));
    await new Promise((r) => setTimeout(r, 25));
  }
  socket.sendCloseStream({ type: "CloseStream" });
});
socket.on("message", (data) => {
  if (data.type === "Results") {
    if (data.is_final) out.finals.push(data);
    else out.interims += 1;
  } else if (data.type === "Metadata") {
    out.metadata = data;
  }
});
socket.on("error", (err) => out.errors.push(String(err?.message ?? err)));
socket.on("close", (event) => {
  out.closeCode = event?.code ?? null;
  // v5 reconnects on any code but 1000: give it a moment to show that it would.
  setTimeout(() => finish(0), 1500);
});
socket.connect();
