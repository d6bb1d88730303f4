"""Stop-string matching over streamed text deltas.

Owns deciding, per request, which streamed text is safe to show: text before a stop
string is emitted, the stop string and everything after it are hidden, and any tail that
could still grow into a stop string is held back until it is ruled out (or the stream ends).

Short stops (the usual ones) are found with `str.find` over the held tail and the new text, and a
tail is held when it is one of their prefixes (a set of them all). That set grows with the square of
a stop's length, so a long stop string (a client may send thousands of characters) is followed
instead by a KMP automaton: a few steps per new character, whatever its length.
"""

from __future__ import annotations

# Stops longer than this are matched by automaton (their prefixes would be too many to keep).
SHORT_STOP_CHARS = 64


class _LongStop:
    """One long stop string's matcher: how much of it the text seen so far ends with (KMP)."""

    __slots__ = ("stop", "fail", "state")

    def __init__(self, stop: str) -> None:
        self.stop = stop
        self.fail = fail = [0] * len(stop)  # fail[i]: the longest proper border of stop[:i + 1]
        k = 0
        for i in range(1, len(stop)):
            while k and stop[i] != stop[k]:
                k = fail[k - 1]
            if stop[i] == stop[k]:
                k += 1
            fail[i] = k
        self.state = 0

    def feed(self, text: str) -> int | None:
        """Advances over `text`; the index in it where the stop string first ends (exclusive), if it does."""
        stop, fail, k = self.stop, self.fail, self.state
        for i, ch in enumerate(text):
            while k and ch != stop[k]:
                k = fail[k - 1]
            if ch == stop[k]:
                k += 1
                if k == len(stop):
                    self.state = k
                    return i + 1
        self.state = k
        return None


class StopMatcher:
    __slots__ = ("stops", "matched", "include", "_held", "_max_hold", "_prefixes", "_long", "_stopped", "feed")

    def __init__(self, stops: list[str] | None, include: bool = False):
        """`include`: the stop string that ends the text is shown (vLLM's include_stop_str_in_output)."""
        self.stops = [s for s in dict.fromkeys(stops or ()) if s]
        self.include = include
        self.matched: str | None = None  # the stop string that ended the stream, if any
        self._held = ""
        self._stopped = False
        short = [s for s in self.stops if len(s) <= SHORT_STOP_CHARS]
        # Every proper prefix of every short stop: a held tail must be one of these (or a long stop's start).
        self._prefixes = frozenset(s[:k] for s in short for k in range(1, len(s)))
        self._max_hold = max((len(s) - 1 for s in short), default=0)
        self._long = [_LongStop(s) for s in self.stops if len(s) > SHORT_STOP_CHARS]
        # No stops: bind the pass-through so the per-token path does no work at all.
        self.feed = self._feed if self.stops else self._passthrough

    def __bool__(self) -> bool:
        return bool(self.stops)

    @property
    def stopped(self) -> bool:
        return self._stopped

    @staticmethod
    def _passthrough(text: str) -> tuple[str, bool]:
        return text, False

    def _feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit now, whether a stop string was hit)."""
        if self._stopped:
            return "", True
        buf = self._held + text
        hit = self._find(buf, len(buf) - len(text), text)
        if hit is not None:
            self._stopped = True
            self._held = ""
            return buf[:hit + len(self.matched or "") if self.include else hit], True
        keep = self._holdable_suffix(buf)
        self._held = buf[len(buf) - keep:] if keep else ""
        return (buf[:len(buf) - keep] if keep else buf), False

    def _find(self, buf: str, new_from: int, text: str) -> int | None:
        """Where in `buf` (the held tail, then `text` from `new_from` on) the earliest stop string starts."""
        best = None
        for s in self.stops:
            if len(s) <= SHORT_STOP_CHARS:
                i = buf.find(s)
                if i != -1 and (best is None or i < best):
                    best, self.matched = i, s
        for long in self._long:
            end = long.feed(text)
            if end is not None and (best is None or new_from + end - len(long.stop) < best):
                best, self.matched = new_from + end - len(long.stop), long.stop
        return best

    def _holdable_suffix(self, buf: str) -> int:
        """The longest suffix of buf that is a proper prefix of some stop string."""
        longest = max((long.state for long in self._long), default=0)
        prefixes = self._prefixes
        for k in range(min(len(buf), self._max_hold), longest, -1):
            if buf[-k:] in prefixes:
                return k
        return longest

    def flush(self) -> str:
        """Held-back text, when generation ends without a stop string."""
        held, self._held = self._held, ""
        return "" if self._stopped else held
