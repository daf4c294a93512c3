"""A stream's recent samples, addressed by their index on the stream clock.

Frames arrive every few tens of milliseconds for hours, so appending must not copy what is
already held (concatenating would cost O(buffer) per frame), and forgetting old audio must be
cheap. The samples live in one array used as a sliding window: appends write after the last
sample, `trim` only moves the first index, and the live part is moved back to the front (or the
array doubles) only when the end is reached, so each sample is copied O(1) times on average.
Windows are handed out as copies: a decode that outlives a later compaction must not pin (or
see) the array it was cut from.
"""

from __future__ import annotations

import numpy as np

INITIAL_CAPACITY = 16000 * 32


class SampleBuffer:
    def __init__(self, capacity: int = INITIAL_CAPACITY) -> None:
        self._data = np.zeros(max(1, capacity), np.float32)
        self._head = 0  # position in `_data` of the sample with index `start`
        self.start = 0  # stream index of the oldest sample held
        self.end = 0  # stream index one past the newest sample (= samples received)

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, samples: np.ndarray) -> None:
        count = len(samples)
        if not count:
            return
        size = len(self)
        if self._head + size + count > len(self._data):
            capacity = len(self._data)
            while size + count > capacity // 2:
                capacity *= 2
            data = np.empty(capacity, np.float32) if capacity != len(self._data) else self._data
            data[:size] = self._data[self._head : self._head + size]
            self._data, self._head = data, 0
        tail = self._head + size
        self._data[tail : tail + count] = samples
        self.end += count

    def trim(self, keep_from: int) -> None:
        """Forget the samples before stream index `keep_from` (never past the end)."""
        keep_from = min(max(keep_from, self.start), self.end)
        self._head += keep_from - self.start
        self.start = keep_from

    def window(self, begin: int, end: int) -> np.ndarray:
        """A copy of the samples [begin, end), clipped to what is held."""
        begin, end = max(begin, self.start), min(end, self.end)
        if end <= begin:
            return np.zeros(0, np.float32)
        offset = self._head - self.start
        return self._data[begin + offset : end + offset].copy()
