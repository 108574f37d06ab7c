"""The SIP user agent's view of the app: which sources a trunk lets in without digest."""

from __future__ import annotations

from ringline.api.sip import AppSipCalls
from tests.api_fixtures import ApiServer

API = "/api/v1"


async def trunk(api: ApiServer, key: str, config: dict) -> int:
    async with api.post(API + "/sip-trunks", key=key, json={"name": "carrier", "config": config}) as resp:
        return resp.status


async def test_a_trunks_host_and_allowed_addresses_are_trusted_and_nothing_else(api: ApiServer) -> None:
    calls = AppSipCalls(api.app)
    assert not await calls.trusted("198.51.100.7")
    key = await api.key("numbers:write")
    assert await trunk(api, key, {"host": "198.51.100.7", "allowed_addresses": ["203.0.113.0/24"]}) == 201
    assert await trunk(api, key, {"host": "sip.example.com"}) == 201  # a name: trusted only by its addresses
    assert await calls.trusted("198.51.100.7")
    assert await calls.trusted("203.0.113.200")
    assert not await calls.trusted("203.0.114.1")
    assert not await calls.trusted("not an address")


async def test_a_trunks_allowed_addresses_must_be_addresses(api: ApiServer) -> None:
    key = await api.key("numbers:write")
    async with api.post(
        API + "/sip-trunks", key=key, json={"name": "x", "config": {"host": "10.0.0.1", "allowed_addresses": ["x/99"]}}
    ) as resp:
        body = await resp.json()
    assert resp.status == 422
    assert "'x/99' is not an IP address or CIDR block" in str(body["details"])
