"""Customer ids: a stable 64-bit hash of each, and the index that finds duplicate ids.

The hash is computed eight bytes at a time on the Arrow buffers, without a Python loop over
ids; the same id gets the same hash in any process, so it also orders the monitoring sample
and matches customers with a previous output.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segml.scoring._clean import large_text, text_buffers

_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_PRIME = np.uint64(0x100000001B3)
_ALL_BITS = np.uint64(2**64 - 1)


def _mix(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: spreads every input bit over the whole word."""
    h = h ^ (h >> np.uint64(30))
    h *= _MIX1
    h ^= h >> np.uint64(27)
    h *= _MIX2
    return h ^ (h >> np.uint64(31))


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A stable 64-bit hash of each id (text), eight bytes at a time, without Python loops.

    The same id always gets the same hash, in any process and any batch: it orders the
    sample, finds duplicates and matches customers with a previous output.
    """
    offsets, raw = text_buffers(large_text(ids))
    data = np.zeros(raw.size + 8, dtype=np.uint8)
    data[: raw.size] = raw
    # Overlapping little-endian words: words[i] holds bytes i..i+7.
    words = np.ndarray((data.size - 7,), dtype="<u8", buffer=data, strides=(1,))
    starts, lengths = offsets[:-1], np.diff(offsets)
    if lengths.size and lengths.min() == lengths.max() > 0:
        return _fixed_width_hashes(words, int(offsets[0]), int(offsets[-1]), int(lengths[0]))
    h = _mix(lengths.astype(np.uint64))
    for k in range(0, int(lengths.max(initial=0)), 8):
        left = np.clip(lengths - k, 0, 8).astype(np.uint64)
        mask = np.where(left >= 8, _ALL_BITS, (np.uint64(1) << (left * np.uint64(8))) - 1)
        mixed = _mix((h * _PRIME) ^ (words[np.minimum(starts + k, data.size - 8)] & mask))
        h = np.where(left > 0, mixed, h)  # an id's hash ends with its last word
    return h


def _fixed_width_hashes(words: np.ndarray, start: int, end: int, width: int) -> np.ndarray:
    """``id_hashes`` of ids that all have ``width`` bytes (most id columns), from the bytes
    ``start:end``: each step reads a strided view of ``words`` under one mask, instead of
    gathering every id's next word and masking it by its own length."""
    h = _mix(np.array([width], dtype=np.uint64))
    for k in range(0, width, 8):
        mask = np.uint64(2 ** (8 * min(width - k, 8)) - 1)
        h = _mix((h * _PRIME) ^ (words[start + k : end : width] & mask))
    return h


class SeenIds:
    """The ids scored so far.

    While ids come in strictly increasing order (a table sorted by its key), none can repeat:
    their hashes are only kept, and indexed when the order first breaks. The index is a bitmap
    of hash prefixes (``BITS_PER_ID`` bits per id expected, grown when more come) that clears
    most ids at once; the few it cannot clear are looked up exactly in sorted runs, which are
    merged ``RUN_FANOUT`` at a time (size-tiered, like a log-structured tree).
    """

    def __init__(self, expected: int = 0) -> None:
        self.runs: list[np.ndarray] = []
        self.bits = max(_MIN_BITMAP_BITS, _bits_for(expected))
        self.bitmap = np.zeros(1 << (self.bits - 3), dtype=np.uint8)
        self.in_order: list[np.ndarray] | None = []
        self.last: pa.Scalar | None = None

    def duplicated(self, ids: pa.LargeStringArray, hashes: np.ndarray) -> np.ndarray:
        """True for an id (with its hash) seen before, in an earlier call or earlier in
        ``ids``; the others are remembered."""
        if self.in_order is not None:
            if _increasing(ids, self.last):
                self.in_order.append(hashes)
                self.last = ids[-1] if len(ids) else self.last
                return np.zeros(hashes.size, dtype=bool)
            kept = np.concatenate([np.empty(0, np.uint64), *self.in_order])
            self.in_order = None
            kept.sort()
            self._add(kept)
        return self._duplicated(hashes)

    def _duplicated(self, hashes: np.ndarray) -> np.ndarray:
        ordered = np.sort(hashes)
        if (ordered[1:] == ordered[:-1]).any():
            twice = _seen_earlier(hashes)
        else:
            twice = np.zeros(hashes.size, dtype=bool)
        maybe = self._marked(hashes) & ~twice
        if maybe.any():
            twice[maybe] = self._in_runs(hashes[maybe])
        if twice.any():
            ordered = np.sort(hashes[~twice])
        self._add(ordered)
        return twice

    @property
    def count(self) -> int:
        """Distinct ids seen."""
        return sum(run.size for run in [*self.runs, *(self.in_order or [])])

    def _add(self, run: np.ndarray) -> None:
        """Remember the sorted hashes ``run`` (none: nothing to do)."""
        if not run.size:
            return
        self.runs.append(run)
        if self.count * BITS_PER_ID > 1 << self.bits:
            self.bits = _bits_for(self.count)
            self.bitmap = np.zeros(1 << (self.bits - 3), dtype=np.uint8)
            for old in self.runs:
                self._mark(old)
        else:
            self._mark(run)
        while len(self.runs) >= RUN_FANOUT and _tier(self.runs[-RUN_FANOUT]) == _tier(run):
            run = np.concatenate(self.runs[-RUN_FANOUT:])
            run.sort()
            del self.runs[-RUN_FANOUT:]
            self.runs.append(run)

    def _bytes_and_bits(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each hash's bitmap byte and the mask of its bit in that byte."""
        slots = (hashes >> np.uint64(64 - self.bits)).astype(np.intp)
        return slots >> 3, np.left_shift(np.uint8(1), (slots & 7).astype(np.uint8))

    def _marked(self, hashes: np.ndarray) -> np.ndarray:
        at, bit = self._bytes_and_bits(hashes)
        return self.bitmap[at] & bit != 0

    def _mark(self, ordered: np.ndarray) -> None:
        """Set the bits of sorted ``ordered``."""
        at, bit = self._bytes_and_bits(ordered)
        self.bitmap[at] |= bit
        # Where ids share a byte, the assignment above kept only one of their bits.
        shared = np.flatnonzero(at[1:] == at[:-1])
        if shared.size:
            both = np.concatenate([shared, shared + 1])
            np.bitwise_or.at(self.bitmap, at[both], bit[both])

    def _in_runs(self, hashes: np.ndarray) -> np.ndarray:
        # Sorted queries walk each run in order, so consecutive lookups touch nearby memory.
        order = np.argsort(hashes)
        ordered = hashes[order]
        twice = np.zeros(hashes.size, dtype=bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run, ordered), run.size - 1)
            twice |= run[at] == ordered
        found = np.empty_like(twice)
        found[order] = twice
        return found


BITS_PER_ID = 32
"""Bitmap bits per id seen: about one id in ``BITS_PER_ID`` needs an exact lookup."""
RUN_FANOUT = 8
_MIN_BITMAP_BITS = 20


def _bits_for(ids: int) -> int:
    """Bitmap size (log2 of its bits) for at least ``BITS_PER_ID`` bits per id."""
    return int(np.ceil(np.log2(max(ids, 1) * BITS_PER_ID)))


def _tier(run: np.ndarray) -> int:
    """Runs of one tier differ in size by less than ``RUN_FANOUT`` times."""
    return int(np.log2(max(run.size, 1)) // np.log2(RUN_FANOUT))


def _increasing(ids: pa.LargeStringArray, after: pa.Scalar | None) -> bool:
    """Whether ``ids`` are strictly increasing, all greater than ``after`` (if given)."""
    if after is not None and len(ids) and not pc.greater(ids[0], after).as_py():
        return False
    return len(ids) < 2 or pc.all(pc.greater(ids[1:], ids[:-1])).as_py()


def _seen_earlier(hashes: np.ndarray) -> np.ndarray:
    """True for a hash that appears earlier in ``hashes``."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    twice = np.zeros(hashes.size, dtype=bool)
    twice[order[1:]] = ordered[1:] == ordered[:-1]
    return twice
