"""Per-agent call behaviours: silence handling, fillers and ambience (``[agents.NAME.silence]``,
``[agents.NAME.fillers]``, ``[agents.NAME.ambience]``). Each can be turned off; every option has one
documented default. The call duration limit and the transfer failure message are plain fields of
``AgentConfig`` (``config/settings.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

Phrase = Annotated[str, Field(min_length=1, max_length=500)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SilenceConfig(_Model):
    """Caller silence while the agent listens: re-engage, then give up and hang up.

    The clock runs only while the agent listens, that is once its reply has been heard out and
    the caller is not talking; never while the agent thinks, runs a tool or speaks. Each
    ``reengage_after_s`` of silence the agent says the next of ``messages``; after
    ``max_attempts`` of them and one more ``reengage_after_s`` of silence it says ``goodbye`` and
    hangs up (end reason ``silence_timeout``). A caller turn with words starts the count afresh.
    With the defaults a caller who has gone quiet is let go after about 30 s plus the messages."""

    enabled: bool = True
    reengage_after_s: float = Field(10.0, gt=0, le=600)
    """Silence before each re-engagement (and before the goodbye)."""
    max_attempts: int = Field(2, ge=0, le=20)
    """Re-engagements before giving up (0: the goodbye comes after the first silence)."""
    messages: tuple[Phrase, ...] = Field(
        ("Are you still there?", "Hello? I'm still here if you need me."), min_length=1
    )
    """Said on successive attempts, in order, starting over when there are more attempts than
    messages; they join the conversation like any reply (the LLM sees them)."""
    goodbye: Phrase = "I haven't heard from you, so I'll end the call now. Goodbye."
    """Said before hanging up; the caller cannot talk over it."""


class FillerConfig(_Model):
    """A short phrase when the answer is slow to come, so the caller is not left in silence.

    When a reply has produced no phrase ``after_ms`` after the caller's turn ended (slow first
    token, or a tool call still running), the agent says one of ``phrases``, then the answer.
    Only while the agent thinks and the caller is silent; at most one per reply; a caller who
    talks cancels it with the reply. The filler is part of the conversation (the transcript and
    the LLM's context show it was said)."""

    enabled: bool = False
    after_ms: float = Field(1200.0, ge=0)
    """How long a reply may go without its first phrase before the filler. A reply whose first
    phrase comes sooner never gets one."""
    phrases: tuple[Phrase, ...] = Field(("One moment.", "Let me check.", "Just a second."), min_length=1)
    """Used in turn, one per filler."""


BUILTIN_AMBIENCE = ("office",)
"""Sounds generated at start (no file needed): ``office``, a soft room tone (shaped pink noise)."""


class AmbienceConfig(_Model):
    """A background sound under the agent's speech and its silences, from the call's start to its
    end. Mixed into the outbound audio at ``level_dbfs``: ~2 us a 20 ms frame of speech (decode,
    add, encode) and ~0.3 us a frame of silence (sliced from the pre-encoded loop). The agent
    then sends audio all the time, not only while it speaks (twice the outbound messages of a
    call where each side talks half the time), and each reply starts with a ``clear`` of the
    ambience queued ahead of it, so it is heard no later than without ambience."""

    enabled: bool = False
    sound: str = Field("office", min_length=1, max_length=1000)
    """``office`` (generated), or the path of a WAV file (16-bit PCM, mono or stereo, any rate;
    played in a loop, resampled to the call's rate)."""
    level_dbfs: float = Field(-45.0, ge=-80, le=-6)
    """Loudness of the ambience, as its RMS level in dB full scale (whatever the file's own level:
    it is scaled to this). Speech from TTS is usually around -20 dBFS."""

    @field_validator("sound")
    @classmethod
    def _known_sound(cls, value: str) -> str:
        if value in BUILTIN_AMBIENCE:
            return value
        if not value.lower().endswith(".wav"):
            raise ValueError(f"want one of {', '.join(BUILTIN_AMBIENCE)} or the path of a .wav file, got {value!r}")
        if not Path(value).is_file():
            raise ValueError(f"no such file: {value}")
        return value
