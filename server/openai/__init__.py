"""OpenAI's audio API (`/v1/audio/transcriptions`, `/v1/audio/translations`) on the same engine."""
