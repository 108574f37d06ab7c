"""``wsframe``: the client frames the Deepgram adapter writes, read back by ``websockets``' own parser."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from ringline.engine.wsframe import OP_BINARY, OP_TEXT, client_frame


def parse(data: bytes) -> Frame:
    """The one frame in ``data``, as a server reads a client's frame (masked)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True)
    with pytest.raises(StopIteration) as done:
        next(parser)
    assert not reader.buffer  # the frame was all of it
    return done.value.value


@pytest.mark.parametrize("size", [0, 1, 125, 126, 320, 65535, 65536, 200_000])
def test_a_binary_frame_of_any_length_reads_back_as_the_same_final_message(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = parse(client_frame(OP_BINARY, payload))
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, payload)
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)  # uncompressed, whatever was negotiated


def test_a_text_frame_reads_back_as_the_text() -> None:
    text = '{"type": "Finalize"}'
    frame = parse(client_frame(OP_TEXT, text.encode()))
    assert (frame.opcode, frame.data.decode()) == (Opcode.TEXT, text)


def test_every_frame_is_masked_with_a_fresh_key() -> None:
    payload = bytes(32)  # all zero: the masked payload on the wire is the key, repeated
    keys = set()
    for _ in range(3000):  # past one read of the key pool (1,024 keys)
        wire = client_frame(OP_BINARY, payload)
        assert wire[1] & 0x80  # the mask bit
        key = wire[2:6]
        assert wire[6:] == key * 8
        keys.add(key)
    assert len(keys) > 2990  # 32-bit random keys: a handful of repeats at most
