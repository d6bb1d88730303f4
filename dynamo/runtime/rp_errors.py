"""How a request-plane stream fails, as its caller sees it (`rp_client.py` raises these): the errors callers
tell apart to migrate a request (`Disconnected`), retry it elsewhere (`CannotConnect`), give up on a deadline
(`StreamTimeout`) or stop a caller that fell behind (`FellBehind`), and the mapping from a worker's `Error`
frame to them."""

from __future__ import annotations

from dynamo.runtime import wire
from dynamo.runtime.wire import ErrorCode


class StreamError(Exception):
    """A failed stream. `code` is usually an ErrorCode; a peer's unknown code stays a plain str."""

    def __init__(self, message: str, code: str = ErrorCode.INTERNAL) -> None:
        super().__init__(message)
        self.code = code


class Disconnected(StreamError):
    """The stream broke mid-way: migrate. `downstream`: the peer is a relay that lost the stream behind
    it (code `lost_downstream`), so the peer itself stays a fine choice for the migrated request."""

    def __init__(self, message: str = "stream ended without its end-of-stream marker", downstream: bool = False) -> None:
        super().__init__(message, ErrorCode.DISCONNECTED)
        self.downstream = downstream


class CannotConnect(StreamError):
    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.CANNOT_CONNECT)


class StreamTimeout(StreamError):
    """Nothing arrived within the caller's deadline. The stream stays open: the caller decides
    whether to wait again or `cancel()` it (a hung worker keeps running until told)."""

    def __init__(self, message: str = "no response within the deadline") -> None:
        super().__init__(message, ErrorCode.TIMEOUT)


class FellBehind(StreamError):
    """The caller's backlog passed its limit (`rp_backlog.Backlog`): the stream was cancelled at its worker
    and what it held dropped. Code `cancelled`: nothing failed that a migration or a retry would fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.CANCELLED)


def stream_error(frame: wire.Error) -> StreamError:
    if frame.code == ErrorCode.DISCONNECTED:  # the worker cut the stream at shutdown: migrate it
        return Disconnected(frame.message)
    if frame.code == ErrorCode.LOST_DOWNSTREAM:  # a relay lost the stream behind it: migrate, through it
        return Disconnected(frame.message, downstream=True)
    return StreamError(frame.message, frame.code)
