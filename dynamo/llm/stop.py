"""Stop-string matching over streamed text deltas.

Owns deciding, per request, which streamed text is safe to show: text before a stop
string is emitted, the stop string and everything after it are hidden, and any tail that
could still grow into a stop string is held back until it is ruled out (or the stream ends).
"""

from __future__ import annotations


class StopMatcher:
    __slots__ = ("stops", "matched", "include", "_held", "_max_hold", "_prefixes", "_stopped", "feed")

    def __init__(self, stops: list[str] | None, include: bool = False):
        """`include`: the stop string that ends the text is shown (vLLM's include_stop_str_in_output)."""
        self.stops = [s for s in dict.fromkeys(stops or ()) if s]
        self.include = include
        self.matched: str | None = None  # the stop string that ended the stream, if any
        self._held = ""
        self._stopped = False
        # Every proper prefix of every stop: a held tail must be one of these.
        self._prefixes = frozenset(s[:k] for s in self.stops for k in range(1, len(s)))
        self._max_hold = max((len(s) - 1 for s in self.stops), default=0)
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
        hit = self._find(buf)
        if hit is not None:
            self._stopped = True
            self._held = ""
            return buf[:hit + len(self.matched or "") if self.include else hit], True
        keep = self._holdable_suffix(buf)
        self._held = buf[len(buf) - keep:] if keep else ""
        return (buf[:len(buf) - keep] if keep else buf), False

    def _find(self, buf: str) -> int | None:
        best = None
        for s in self.stops:
            i = buf.find(s)
            if i != -1 and (best is None or i < best):
                best, self.matched = i, s
        return best

    def _holdable_suffix(self, buf: str) -> int:
        # Longest suffix of buf that is a proper prefix of some stop string.
        prefixes = self._prefixes
        for k in range(min(len(buf), self._max_hold), 0, -1):
            if buf[-k:] in prefixes:
                return k
        return 0

    def flush(self) -> str:
        """Held-back text, when generation ends without a stop string."""
        held, self._held = self._held, ""
        return "" if self._stopped else held
