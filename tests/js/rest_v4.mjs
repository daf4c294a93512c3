// JS SDK v4 (createClient) against openlisten: node rest_v4.mjs SERVER_URL API_KEY FILE AUDIO_URL
// Prints {"file": <response>, "url": <response>} as JSON; exits 1 on any SDK error.
import { readFileSync } from "node:fs";
import { createClient } from "dg4";

const [serverUrl, apiKey, file, audioUrl] = process.argv.slice(2);
const deepgram = createClient(apiKey, { global: { url: serverUrl } });

const fromFile = await deepgram.listen.prerecorded.transcribeFile(readFileSync(file), {
  model: "nova-3",
  smart_format: true,
  utterances: true,
  search: ["country"],
});
if (fromFile.error) throw fromFile.error;

const fromUrl = await deepgram.listen.prerecorded.transcribeUrl(
  { url: audioUrl },
  { model: "nova-3", punctuate: true, paragraphs: true },
);
if (fromUrl.error) throw fromUrl.error;

console.log(JSON.stringify({ file: fromFile.result, url: fromUrl.result }));
