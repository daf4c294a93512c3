// Subtitle cues from timed words: the rules of server/subtitles.py (two lines of about 42
// characters, about 7 s per cue, new cue at a pause, a speaker change or a sentence end), so a
// download from this page matches what the API and the CLI write.
export const RULES = { maxLineChars: 42, maxLines: 2, maxDurationS: 7, pauseS: 1, sentenceMinChars: 24 };
const SENTENCE_END = /[.?!。？！]$/;
const CLAUSE_END = /[,;:，、]$/;

function greedyLines(words, width) {
  const lines = [];
  for (const word of words) {
    if (lines.length && lines[lines.length - 1].length + 1 + word.length <= width) lines[lines.length - 1] += " " + word;
    else lines.push(word);
  }
  return lines;
}

const fits = (words, rules) => words.length <= 1 || greedyLines(words, rules.maxLineChars).length <= rules.maxLines;

export function layout(words, rules = RULES) {
  const text = words.join(" ");
  if (text.length <= rules.maxLineChars || words.length < 2) return [text];
  if (rules.maxLines < 2 || !fits(words, rules)) return greedyLines(words, rules.maxLineChars);
  let best = null;
  for (let cut = 1; cut < words.length; cut++) {
    const top = words.slice(0, cut).join(" "), bottom = words.slice(cut).join(" ");
    if (top.length > rules.maxLineChars || bottom.length > rules.maxLineChars) continue;
    let cost = Math.abs(top.length - bottom.length) + (top.length > bottom.length ? 2 : 0);
    if (SENTENCE_END.test(words[cut - 1]) || CLAUSE_END.test(words[cut - 1])) cost -= Math.floor(rules.maxLineChars / 2);
    if (best === null || cost < best[0]) best = [cost, cut];
  }
  return [words.slice(0, best[1]).join(" "), words.slice(best[1]).join(" ")];
}

function breaksBefore(cue, word, rules) {
  const last = cue[cue.length - 1];
  if (word.speaker !== last.speaker) return true;
  if (word.start - last.end >= rules.pauseS) return true;
  if (word.end - cue[0].start > rules.maxDurationS) return true;
  if (!fits([...cue, word].map((w) => w.text), rules)) return true;
  const chars = cue.reduce((n, w) => n + w.text.length + 1, 0);
  return SENTENCE_END.test(last.text) && chars >= rules.sentenceMinChars;
}

// words: [{text, start, end, speaker}] -> [{start, end, lines, speaker}]
export function cues(words, rules = RULES) {
  const groups = [];
  for (const word of words) {
    if (!word.text) continue;
    const cue = groups[groups.length - 1];
    if (cue && !breaksBefore(cue, word, rules)) cue.push(word);
    else groups.push([word]);
  }
  const out = groups.map((g) => ({
    start: g[0].start, end: Math.max(g[g.length - 1].end, g[0].start),
    lines: layout(g.map((w) => w.text), rules), speaker: g[0].speaker,
  }));
  for (let i = 0; i + 1 < out.length; i++) out[i].end = Math.max(out[i].start, Math.min(out[i].end, out[i + 1].start));
  return out;
}

export function timestamp(seconds, decimal) {
  let ms = Math.max(0, Math.round(seconds * 1000));
  const h = Math.floor(ms / 3600000); ms -= h * 3600000;
  const m = Math.floor(ms / 60000); ms -= m * 60000;
  const s = Math.floor(ms / 1000); ms -= s * 1000;
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(h)}:${pad(m)}:${pad(s)}${decimal}${pad(ms, 3)}`;
}

export function srt(items) {
  const blocks = items.map((c, i) => `${i + 1}\n${timestamp(c.start, ",")} --> ${timestamp(c.end, ",")}\n${c.lines.join("\n")}`);
  return blocks.length ? blocks.join("\n\n") + "\n" : "";
}

export function vtt(items) {
  const blocks = ["WEBVTT", ...items.map((c) => {
    const lines = [...c.lines];
    if (c.speaker !== undefined && c.speaker !== null) lines[0] = `<v Speaker ${c.speaker}>${lines[0]}`;
    return `${timestamp(c.start, ".")} --> ${timestamp(c.end, ".")}\n${lines.join("\n")}`;
  })];
  return blocks.join("\n\n") + "\n";
}
