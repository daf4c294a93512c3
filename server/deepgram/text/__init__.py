"""Text shaping as Deepgram does it: pure functions from Whisper's words to Deepgram tokens.

`shape` is the entry point, one pass shared by REST, streaming and the CLI:

1. `tokens.join_pieces`: Whisper's word pieces glued into written units.
2. `numbers`: with `numerals` or `smart_format` spoken numbers become digits (text2num); with
   neither, every number is spoken as words (num2words) in the transcript's language, and a
   token like "$25.50" becomes "twenty five dollars and fifty cents", one token per spoken word
   with the unit's time shared out between them.
3. `smart`: phone numbers, spoken currency and percentages in their written forms.
4. `redaction` on the digit view (so a spelled-out card number is caught too), then `rewrites`:
   dictation, measurements, filler words, `replace`, and the profanity filter.
5. Casing and punctuation (`tokens.sentence_case`): `word` is always the spoken, lower-case,
   unpunctuated form; `punctuated_word` the formatted one, sentence-cased.
"""

from server.deepgram.text.numbers import ALPHA2DIGIT_LANGUAGES
from server.deepgram.text.redaction import REDACT_SUPPORTED, luhn
from server.deepgram.text.rewrites import FILLER_PROMPT, parse_replacement
from server.deepgram.text.search import search
from server.deepgram.text.shape import TextOptions, shape
from server.deepgram.text.tokens import SENTENCE_END, Token, bare, join, punctuated_of, word_of

__all__ = [
    "ALPHA2DIGIT_LANGUAGES",
    "FILLER_PROMPT",
    "REDACT_SUPPORTED",
    "SENTENCE_END",
    "TextOptions",
    "Token",
    "bare",
    "join",
    "luhn",
    "parse_replacement",
    "punctuated_of",
    "search",
    "shape",
    "word_of",
]
