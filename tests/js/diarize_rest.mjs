// JS SDKs v4 (createClient) and v5 (DeepgramClient) read a diarized REST response.
// usage: node diarize_rest.mjs SERVER_URL API_KEY FILE
// Prints {"v4": {...}, "v5": {...}}: what each SDK handed back, reduced to the speaker fields
// an app reads (words' speaker and speaker_confidence, utterances' and paragraphs' speaker).
import { readFileSync } from "node:fs";
import { createClient } from "dg4";
import { DeepgramClient } from "dg5";

const [serverUrl, apiKey, file] = process.argv.slice(2);
const audio = readFileSync(file);
const options = { model: "nova-3", diarize: true, smart_format: true, utterances: true };

function speakers(result) {
  const alt = result.results.channels[0].alternatives[0];
  return {
    words: alt.words.map((w) => [w.start, w.end, w.speaker, w.speaker_confidence]),
    utterances: result.results.utterances.map((u) => [u.speaker, u.words.map((w) => w.speaker)]),
    paragraphs: alt.paragraphs.paragraphs.map((p) => p.speaker),
  };
}

const v4 = await createClient(apiKey, { global: { url: serverUrl } }).listen.prerecorded.transcribeFile(
  audio,
  options,
);
if (v4.error) throw v4.error;
const v5 = await new DeepgramClient({ apiKey, baseUrl: serverUrl }).listen.v1.media.transcribeFile(
  audio,
  options,
);
console.log(JSON.stringify({ v4: speakers(v4.result), v5: speakers(v5) }));
