"""Fuzz target ``control``: the control-message decoder and the reliable channel's receive (section 4).

Each input is decoded as received by a device, by a server and by a side-less reader, and given to a fresh
:class:`~loa.protocol.reliable.ReliableChannel` of each side. Accepted errors: ``OversizeError``,
``MalformedError`` and ``FieldError`` (every :class:`~loa.protocol.errors.RemoteProtocolError`). Oracle: a
known message that decodes encodes again without error, and that encoding decodes to an equal message.
"""

from __future__ import annotations

import contextlib

from loa.bench.fuzz._common import vectors
from loa.protocol.control import MAX_MESSAGE, Side, UnknownMessage, decode, encode
from loa.protocol.errors import RemoteProtocolError
from loa.protocol.reliable import ReliableChannel

MAX_LEN = MAX_MESSAGE + 64


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer and atheris use
    for side in (Side.DEVICE, Side.SERVER, None):
        try:
            message = decode(data, side=side)
        except RemoteProtocolError:
            message = None
        if message is not None and not isinstance(message, UnknownMessage):
            again = decode(encode(message), side=side)
            if again != message:
                raise AssertionError(f"{message!r} does not survive an encode and a decode: {again!r}")
        with contextlib.suppress(RemoteProtocolError):
            ReliableChannel(side=side).receive(data, 1.0)


def seeds() -> dict[str, bytes]:
    return {v["id"]: bytes.fromhex(v["hex"]) for v in vectors("control")["vectors"]}
