// JS SDK v5 (DeepgramClient) against openlisten: node rest_v5.mjs SERVER_URL API_KEY FILE AUDIO_URL
// Prints {"file": <response>, "url": <response>} as JSON; exits 1 on any SDK error.
import { readFileSync } from "node:fs";
import { DeepgramClient } from "dg5";

const [serverUrl, apiKey, file, audioUrl] = process.argv.slice(2);
const client = new DeepgramClient({ apiKey, baseUrl: serverUrl });

const fromFile = await client.listen.v1.media.transcribeFile(readFileSync(file), {
  model: "nova-3",
  smart_format: true,
  utterances: true,
  search: ["country"],
});

const fromUrl = await client.listen.v1.media.transcribeUrl({
  url: audioUrl,
  model: "nova-3",
  punctuate: true,
  paragraphs: true,
});

console.log(JSON.stringify({ file: fromFile, url: fromUrl }));
