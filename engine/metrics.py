"""Per-turn latency marks, on the call's clock."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class TurnMetrics:
    """When each stage of one reply happened (clock seconds; None: did not happen)."""

    user_stopped: float | None = None
    """The last voiced frame of the caller's turn arrived."""
    stt_final: float | None = None
    """The final transcript that completed the turn arrived."""
    turn_committed: float | None = None
    """End of turn decided; the reply started."""
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    first_audio_sent: float | None = None
    """The first frame of reply audio was handed to the transport."""
    interrupted_at: float | None = None
    """The caller barged in and the agent's audio was stopped."""

    def mark(self, name: str, at: float) -> None:
        """Record ``name`` at ``at`` unless it is already recorded."""
        if getattr(self, name) is None:
            setattr(self, name, at)

    def breakdown_ms(self) -> dict[str, float | None]:
        """Each mark in milliseconds after the caller stopped speaking."""
        origin = self.user_stopped
        return {
            f.name: None
            if origin is None or getattr(self, f.name) is None
            else round((getattr(self, f.name) - origin) * 1000, 1)
            for f in fields(self)
            if f.name != "user_stopped"
        }
