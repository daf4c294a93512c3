"""smart-turn v3.2: the probability that a turn is complete, from its audio alone.

The int8 ONNX file (BSD-2-Clause, 8.7 MB) ships inside the `pipecat-ai` wheel. Importing
pipecat would run its package `__init__` (loguru and more), so the file is found through the
installed distribution's file list and never imported; `make serve` and the images install
that wheel without its dependencies. The bundled file is checked by size and sha256
(`server/packaged.py`). An operator may set `turn_model` to another file with the same
signature (input_features [batch, 80, 800] -> logits [batch, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from server.errors import InvalidParameter
from server.packaged import distribution_file, mismatch
from server.turns.features import N_FRAMES, N_MELS, batch_features

DISTRIBUTION = "pipecat-ai"
BUNDLED_FILE = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
BUNDLED_SIZE = 8679182
BUNDLED_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
PIPECAT_VERSION = "1.14.0"  # the release whose file was checked; Makefile and install.sh pin it
INSTALL_HINT = (
    f"pip install --no-deps --ignore-requires-python 'pipecat-ai=={PIPECAT_VERSION}' "
    "(or set turn_model to a smart-turn v3 ONNX file)"
)


class TurnModelUnavailable(InvalidParameter):
    """No end-of-turn model can be loaded, so Flux cannot be served (a 400 on `/v2/listen`,
    nothing else affected); the message says what the operator should install or set."""

    def __init__(self, message: str) -> None:
        super().__init__(f"end of turn (Flux) is not available on this server: {message}")


def bundled_model_path() -> Path | None:
    """smart-turn v3.2 inside the installed pipecat-ai distribution, without importing it."""
    return distribution_file(DISTRIBUTION, BUNDLED_FILE)


def _check_bundled(path: Path) -> None:
    problem = mismatch(path, BUNDLED_SIZE, BUNDLED_SHA256)
    if problem is not None:
        raise TurnModelUnavailable(f"the smart-turn file in pipecat-ai {problem}: {INSTALL_HINT}")


class TurnModel:
    """One onnxruntime session; `score` is safe to call from several threads at once (an
    InferenceSession's `run` is), and each call uses at most `threads` cores."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own types, with paths in the text
            raise TurnModelUnavailable(f"cannot load {path.name}: not an ONNX model") from exc
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        shape = inputs.get("input_features")
        if shape is None or list(shape[1:]) != [N_MELS, N_FRAMES] or outputs != ["logits"]:
            raise TurnModelUnavailable(
                f"{path.name} is not a smart-turn v3 model (input_features [batch, 80, 800] "
                "-> logits)"
            )
        self.path = path

    @classmethod
    def load(cls, path: Path | None = None, threads: int = 1) -> TurnModel:
        """The operator's file when `path` is set, else the checked file in pipecat-ai."""
        if path is not None:
            if not Path(path).is_file():
                raise TurnModelUnavailable(f"turn_model {Path(path).name} is not a file")
            return cls(Path(path), threads)
        bundled = bundled_model_path()
        if bundled is None:
            raise TurnModelUnavailable(f"the smart-turn model is not installed: {INSTALL_HINT}")
        _check_bundled(bundled)
        return cls(bundled, threads)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        """Probabilities for a (batch, 80, 800) stack of features."""
        (logits,) = self._session.run(["logits"], {"input_features": features})
        return np.asarray(logits, dtype=np.float64).reshape(-1)

    def score(self, audio: np.ndarray) -> float:
        """Probability that the turn whose 16 kHz mono audio ends here is complete."""
        return float(self.score_batch([audio])[0])

    def score_batch(self, audios: Sequence[np.ndarray]) -> list[float]:
        """`score` for several turns in one model call (cheaper per turn than one by one)."""
        if not audios:
            return []
        return [float(p) for p in self.score_features(batch_features(list(audios)))]
