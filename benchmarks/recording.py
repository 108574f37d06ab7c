"""Call recordings: both sides of a simulated call on one timeline, written as a stereo WAV.

The caller's audio is placed at the media clock of the frames it sent (frame k at k * 20 ms),
the agent's at the moment the caller's playback buffer played it (so what the caller heard,
including cuts made by ``clear``). Both are decoded to PCM16 at 8 kHz by the engine's G.711
decoder.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringline.engine.audio import MULAW_8K, ulaw_decode

RATE = MULAW_8K.sample_rate


def ulaw_to_pcm16(ulaw: bytes | bytearray) -> np.ndarray:
    """mu-law bytes -> PCM16 samples (read-only array)."""
    return np.frombuffer(ulaw_decode(bytes(ulaw)), dtype="<i2")


@dataclass(frozen=True, slots=True)
class Recording:
    """PCM16 at 8 kHz, sample 0 = the moment the ``start`` message was sent. Same length."""

    caller: np.ndarray
    agent: np.ndarray

    @property
    def duration(self) -> float:
        return len(self.caller) / RATE


def build_recording(caller_frames: list[bytes], agent_segments: list[tuple[float, bytes | bytearray]]) -> Recording:
    """``caller_frames`` in send order (20 ms each); ``agent_segments`` as (start s, mu-law)."""
    caller = ulaw_to_pcm16(b"".join(caller_frames))
    end = len(caller)
    placed: list[tuple[int, np.ndarray]] = []
    for start, audio in agent_segments:
        offset = max(0, round(start * RATE))
        pcm = ulaw_to_pcm16(audio)
        placed.append((offset, pcm))
        end = max(end, offset + len(pcm))
    agent = np.zeros(end, dtype=np.int16)
    for offset, pcm in placed:
        agent[offset : offset + len(pcm)] = pcm
    caller = np.concatenate([caller, np.zeros(end - len(caller), dtype=np.int16)])
    return Recording(caller=caller, agent=agent)


def write_stereo_wav(path: str | Path, result: object) -> None:
    """Write a call's recording as 16-bit stereo WAV: caller left, agent right.

    ``result`` is a ``CallResult`` from ``run_call(..., record=True)`` (or a ``Recording``).
    """
    rec = result if isinstance(result, Recording) else getattr(result, "recording", None)
    if rec is None:
        raise ValueError("no recording: run the call with record=True")
    stereo = np.empty(2 * len(rec.caller), dtype="<i2")
    stereo[0::2] = rec.caller
    stereo[1::2] = rec.agent
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(stereo.tobytes())
