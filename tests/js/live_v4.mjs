// JS SDK v4 (createClient + listen.live), the seed guide's Node example, against openlisten.
// usage: node live_v4.mjs BASE_URL KEY PCM16_FILE [extra query json]
// Prints one JSON line: {finals, interims, metadata, closed, unhandled}.
import { readFileSync } from "node:fs";
import { createClient, LiveTranscriptionEvents } from "dg4";

const [url, key, file, extra] = process.argv.slice(2);
const audio = readFileSync(file);
const client = createClient(key, { global: { url } });
const connection = client.listen.live({
  model: "nova-3",
  encoding: "linear16",
  sample_rate: 16000,
  interim_results: true,
  punctuate: true,
  ...(extra ? JSON.parse(extra) : {}),
});
const out = { finals: [], interims: 0, metadata: null, closed: false, unhandled: [], errors: [] };
const timer = setTimeout(() => finish(1), 90000);

function finish(code) {
  clearTimeout(timer);
  console.log(JSON.stringify(out));
  process.exit(code);
}

connection.on(LiveTranscriptionEvents.Open, async () => {
  const chunk = 3200; // 100 ms of 16 kHz linear16
  for (let i = 0; i < audio.length; i += chunk) {
    connection.send(audio.subarray(i, i + chunk));
    await new Promise((r) => setTimeout(r, 25));
  }
  connection.requestClose();
});
connection.on(LiveTranscriptionEvents.Transcript, (data) => {
  if (data.is_final) out.finals.push(data);
  else out.interims += 1;
});
connection.on(LiveTranscriptionEvents.Metadata, (data) => (out.metadata = data));
connection.on(LiveTranscriptionEvents.Unhandled, (data) => out.unhandled.push(data));
connection.on(LiveTranscriptionEvents.Error, (err) => out.errors.push(String(err?.message ?? err)));
connection.on(LiveTranscriptionEvents.Close, (event) => {
  out.closed = event?.code ?? true;
  finish(0);
});
