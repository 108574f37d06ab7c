"""The process's shared HTTP clients: one per key, closed by their owner, bound to one loop."""

from __future__ import annotations

import asyncio

import pytest

from ringline.engine.clients import HttpClients, borrow

pytestmark = pytest.mark.timeout(10)


class Client:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


def maker(made: list[Client], name: str):
    def make() -> tuple[Client, object]:
        client = Client(name)
        made.append(client)
        return client, client.aclose

    return make


async def test_one_client_per_key_made_on_first_use_and_all_closed_by_the_owner() -> None:
    made: list[Client] = []
    async with HttpClients() as clients:
        a = clients.get(("vendor", "https://a", "key"), maker(made, "a"))
        assert clients.get(("vendor", "https://a", "key"), maker(made, "again")) is a
        b = clients.get(("vendor", "https://b", "key"), maker(made, "b"))
        assert [c.name for c in made] == ["a", "b"] and clients.count == 2
        assert not a.closed and not b.closed
    assert a.closed and b.closed
    with pytest.raises(RuntimeError, match="HttpClients is closed"):
        clients.get(("vendor", "https://a", "key"), maker(made, "late"))
    await clients.aclose()  # idempotent


async def test_a_failing_close_is_logged_and_the_others_still_close(caplog) -> None:
    made: list[Client] = []

    async def broken() -> None:
        raise OSError("gone")

    clients = HttpClients()
    clients.get(("broken",), lambda: (Client("broken"), broken))
    good = clients.get(("good",), maker(made, "good"))
    await clients.aclose()
    assert good.closed
    assert "closing the shared broken client failed" in caplog.text


async def test_the_tls_context_is_made_once_and_keys_never_show() -> None:
    async with HttpClients() as clients:
        assert clients.tls_context() is clients.tls_context()
        clients.get(("vendor", "https://a", "sk-secret-123"), maker([], "a"))
        assert repr(clients) == "<HttpClients 1 clients>"


def test_a_client_is_bound_to_the_loop_it_was_first_used_on() -> None:
    clients = HttpClients()

    async def use() -> None:
        clients.get(("vendor",), maker([], "a"))

    asyncio.run(use())
    with pytest.raises(RuntimeError, match="bound to another event loop"):
        asyncio.run(use())


async def test_borrow_lends_the_shared_clients_or_makes_and_closes_private_ones() -> None:
    made: list[Client] = []
    async with HttpClients() as shared:
        async with borrow(shared) as lent:
            assert lent is shared
            lent.get(("vendor",), maker(made, "shared"))
        assert not made[0].closed  # the owner closes it, not the borrower
        async with borrow(None) as private:
            assert private is not shared
            private.get(("vendor",), maker(made, "private"))
        assert made[1].closed
