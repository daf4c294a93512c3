"""End of turn for Flux (`/v2/listen`): smart-turn v3.2 features and model, and the pure
decision that combines its score with the transcript and the length of the pause."""
