"""WebSocket client frames (RFC 6455, section 5), for a sender that writes to its transport itself.

A client masks every frame with a key from a strong source of entropy (section 5.3). ``websockets``
makes each frame with a ``Frame`` object, a ``BytesIO`` and an ``os.urandom(4)`` (a system call) per
frame; at 25 audio messages a second per call that was a fifth of the Deepgram adapter's CPU. Here
the keys come from the same source, read 4 KiB (1,024 keys) at a time, and the payload is masked by
``websockets``' C ``apply_mask``. One message is one frame (no fragmentation, no extensions: the
caller only uses this on a connection that negotiated none).
"""

from __future__ import annotations

import os
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

OP_TEXT = 0x1
OP_BINARY = 0x2

_FIN = 0x80
_MASKED = 0x80
_KEY_POOL_BYTES = 4096


class _MaskKeys:
    """Masking keys from ``os.urandom``, one read per 1,024 keys."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        at = self._at
        if at >= len(self._pool):
            self._pool, at = os.urandom(_KEY_POOL_BYTES), 0
        self._at = at + 4
        return self._pool[at : at + 4]


_keys = _MaskKeys()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame carrying ``payload`` (``OP_TEXT`` payloads are UTF-8)."""
    n = len(payload)
    if n < 126:
        head = bytes((_FIN | opcode, _MASKED | n))
    elif n < 65536:
        head = struct.pack("!BBH", _FIN | opcode, _MASKED | 126, n)
    else:
        head = struct.pack("!BBQ", _FIN | opcode, _MASKED | 127, n)
    key = _keys.next()
    return b"".join((head, key, apply_mask(payload, key)))
