"""``[telephony.sip]``: Ringline as a SIP user agent, answering trunks and PBXs with no media server."""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class SipConfig(BaseModel):
    """Where the SIP user agent listens, which sources may call it, and its RTP ports.

    A source may call when its address is in ``allowed_addresses`` or in a SIP trunk's
    ``allowed_addresses`` (the control API's trunks), or when it answers a digest challenge for
    ``username``/``password``. With neither configured, nobody can call in.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen_host: str = "0.0.0.0"
    """Address the UDP socket binds. Default: every interface."""
    listen_port: int = Field(5060, ge=0, le=65535)
    """UDP port for SIP. Default: 5060 (0: any free port, for tests)."""
    public_host: str | None = None
    """Address peers reach us at, written in Contact, Via and SDP. Default: ``listen_host``, or
    the address the OS would use to reach the peer when that is ``0.0.0.0``."""
    rtp_port_min: int = Field(10000, ge=1024, le=65534)
    rtp_port_max: int = Field(20000, ge=1025, le=65535)
    """Each call takes one even port in [rtp_port_min, rtp_port_max] for RTP (RTCP on the next,
    odd one). Default: 10000-20000, room for 5,000 calls."""
    allowed_addresses: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(default_factory=list)
    """Sources allowed to call without authenticating (addresses or CIDR blocks), besides each
    trunk's own. Default: none."""
    username: str | None = Field(None, min_length=1, max_length=128)
    password: SecretStr | None = None
    """Digest credentials a caller from any other address must answer with. ``password`` may come
    from the environment as ``RINGLINE_SIP_PASSWORD``. Default: none (digest off)."""
    realm: str = Field("ringline", min_length=1, max_length=128)
    requests_per_second: float = Field(20.0, gt=0)
    """Requests accepted from one source address per second (bursts of twice that); a flood past
    it is dropped, logged once a second. Default: 20."""
    ring_s: float = Field(0.0, ge=0, le=60)
    """How long an incoming call rings (180) before the agent answers. Default: 0, at once."""
    jitter_ms: int = Field(40, ge=0, le=200)
    """Audio held back from the caller's RTP to put late and reordered packets back in order: the
    delay the agent hears the caller with. Default: 40 ms (loopback or a LAN: 20 is enough)."""
    no_answer_timeout_s: float = Field(30.0, gt=0)
    """How long an outbound INVITE may ring before we cancel it (end reason ``no_answer``)."""
    rtp_pacing: Literal["process", "loop"] = "process"
    """Who sends the calls' RTP: ``process`` (default), a small sending process that sends each
    packet at its 20 ms slot whatever the server's event loop is doing (Linux; elsewhere it falls
    back to ``loop``), or ``loop``, the event loop's own ticker (packets leave when it gets to them)."""
    rtp_pacing_lead_ms: int = Field(15, ge=0, le=19)
    """With ``rtp_pacing = "process"``: how long after the loop builds a tick's packets the pacer
    sends them, the loop lateness it hides (and the delay it adds). Default: 15 ms (at 200 calls on
    one core, 10 left a few packets a slot late)."""
    rtp_pacing_realtime: bool = True
    """With ``rtp_pacing = "process"``: whether the pacing process asks for real-time scheduling
    (``SCHED_FIFO``; granted with CAP_SYS_NICE or as root, else it falls back to nice -10, then to
    normal). Default: on."""
    user_agent: str = "Ringline"

    @field_validator("allowed_addresses", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [ipaddress.ip_network(v, strict=False) if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="before")
    @classmethod
    def _password_from_environment(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("username") and not data.get("password"):
            if not (value := os.environ.get("RINGLINE_SIP_PASSWORD")):
                raise ValueError("password is missing: set it here or in the environment as RINGLINE_SIP_PASSWORD")
            data = {**data, "password": value}
        return data

    @model_validator(mode="after")
    def _ports(self) -> SipConfig:
        if self.rtp_port_max - self.rtp_port_min < 1:
            raise ValueError("rtp_port_max must be above rtp_port_min")
        return self

    def allows(self, address: str) -> bool:
        """Whether ``address`` may call without a digest challenge."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed_addresses)
