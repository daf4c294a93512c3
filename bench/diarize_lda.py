"""Learns the bundled d-vector's LDA map (server/diarize/dvector_lda.npz) from the development
part of the diarization set only: windows lying wholly inside one reference turn of the
assembled development conversations, labelled with their voice. Deterministic: the same corpus
gives the same file.

    .venv/bin/python bench/diarize_lda.py [--conversations 48] [--dim 12] [--shrink 0.1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from server.audio.decode import decode  # noqa: E402
from server.diarize.embedder import load_embedder  # noqa: E402
from server.diarize.pipeline import FRAME_S, window_grid  # noqa: E402
from server.diarize.projection import BUNDLED, fit_lda  # noqa: E402
from tests.conversations import conversation  # noqa: E402


def labelled_windows(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw d-vectors of windows inside exactly one speaker's turn, and that speaker's voice."""
    embedder = load_embedder(None, 1, project=False)
    vectors, labels = [], []
    for index in range(count):
        conv = conversation("dev", index)
        assert conv.part == "dev"
        audio = decode(conv.wav(), None).mono()
        feats = embedder.features(audio)
        regions = [(a, b) for a, b, _ in conv.turns]
        starts, _ = window_grid(regions, len(feats), embedder.frames, 40)
        raw = embedder.embed_frames(starts, feats)
        for vector, start in zip(raw, starts, strict=True):
            a, b = start * FRAME_S, (start + embedder.frames) * FRAME_S
            inside = {s for x, y, s in conv.turns if x - 0.1 <= a and b <= y + 0.1}
            touching = {s for x, y, s in conv.turns if x < b and a < y}
            if len(inside) == 1 and len(touching) == 1:
                vectors.append(vector)
                labels.append(inside.pop())
    return np.array(vectors), np.array(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=48)
    parser.add_argument("--dim", type=int, default=12)
    parser.add_argument("--shrink", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=BUNDLED)
    args = parser.parse_args()
    vectors, labels = labelled_windows(args.conversations)
    fit_lda(vectors, labels, args.dim, args.shrink).save(args.out)
    print(f"{len(vectors)} windows of {len(set(labels))} voices -> {args.out}")


if __name__ == "__main__":
    main()
