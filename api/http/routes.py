"""Declaring an endpoint once: the route, its auth, its validation, its envelope and its documentation.

A resource module keeps an ``ApiRoutes`` table, like aiohttp's ``RouteTableDef``::

    routes = ApiRoutes(tag="agents")

    @routes.post("/agents", body=AgentCreate, response=Agent, scopes={Scope.AGENTS_WRITE}, status=201,
                 summary="Create an agent", errors={409})
    async def create_agent(req: ApiRequest[AgentCreate, None]) -> Agent:
        return await req.app[STORE].create_agent(req.body)

    @routes.get("/agents", query=AgentFilter, response=Agent, many=True, scopes={Scope.AGENTS_READ})
    async def list_agents(req: ApiRequest[None, AgentFilter]) -> Page[Agent]:
        ...

The handler gets an ``ApiRequest`` with the validated ``body`` and ``query`` models (None when the
route declares none), the path parameters and the authenticated principal, and returns the
declared ``response`` model (a ``Page`` of it when ``many``; None when ``response`` is None). The
route layer wraps it in the envelope; anything else is a bug and answers 500. ``raw=True`` hands
back whatever ``web.StreamResponse`` the handler returns (a WebSocket), documented as a GET.

Everything declared here also feeds the OpenAPI document, so the two cannot drift.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import ChainMapProxy, web
from pydantic import BaseModel

from ringline.api.http.auth import Principal, check_scopes
from ringline.api.http.errors import ERROR_DESCRIPTIONS
from ringline.api.http.validation import ListQuery, forbids_extra, query_list_fields

B = TypeVar("B")
Q = TypeVar("Q")

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class ApiRequest(Generic[B, Q]):
    """What a handler receives."""

    http: web.Request
    principal: Principal | None
    """None only on public routes."""
    body: B
    query: Q
    request_id: str

    @property
    def params(self) -> Mapping[str, str]:
        """Path parameters (``{call_id}`` -> ``params["call_id"]``)."""
        return self.http.match_info

    @property
    def app(self) -> ChainMapProxy:
        """App state through the chain of applications (``req.app[CALLS]`` finds the parent's)."""
        return self.http.config_dict


Handler = Callable[[ApiRequest[Any, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Operation:
    """One declared endpoint. See ``ApiRoutes.route`` for the fields."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    tag: str
    summary: str
    description: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    many: bool
    status: int
    scopes: frozenset[str]
    public: bool
    raw: bool
    call_limited: bool
    errors: frozenset[int]
    query_lists: frozenset[str] = field(default=frozenset())
    media_type: str | None = None
    """A raw route that answers with a file of this type (with range requests) instead of a WebSocket."""

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    def error_statuses(self) -> list[int]:
        """Every error status this endpoint may answer, for its documentation."""
        statuses = {429, 500} | set(self.errors)
        if not self.public:
            statuses |= {401, 403}
        if self.body is not None:
            statuses |= {400, 413, 422}
        if self.query is not None:
            statuses.add(422)
        if self.path_params:
            statuses.add(404)
        return sorted(statuses)


class ApiRoutes:
    """A table of declared endpoints; ``setup_api`` mounts one or more of them."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag
        self._operations: list[Operation] = []

    def __iter__(self) -> Iterator[Operation]:
        return iter(self._operations)

    def route(
        self,
        method: str,
        path: str,
        *,
        response: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        many: bool = False,
        status: int = 200,
        scopes: set[str] | frozenset[str] = frozenset(),
        public: bool = False,
        raw: bool = False,
        media_type: str | None = None,
        call_limited: bool = False,
        errors: set[int] | frozenset[int] = frozenset(),
        summary: str | None = None,
        description: str | None = None,
        tag: str | None = None,
        operation_id: str | None = None,
    ) -> Callable[[Handler], Handler]:
        """Declare an endpoint.

        ``scopes``: all required (``admin`` implies every scope); ``public``: no key needed.
        ``many``: a list endpoint; ``query`` must then subclass ``ListQuery`` and the handler returns
        a ``Page``. ``call_limited``: a control command, also limited per ``{call_id}``.
        ``errors``: statuses the handler itself raises (404, 409, ...), for the document.
        ``summary`` defaults to the docstring's first line, ``description`` to the rest of it.
        """
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unsupported method {method}")
        for model, what in ((body, "body"), (query, "query")):
            if model is not None and not forbids_extra(model):
                raise TypeError(f"{model.__name__} ({what} of {method} {path}) must forbid extra fields (ApiModel)")
        if many and (query is None or not issubclass(query, ListQuery)):
            raise TypeError(f"{method} {path}: a list endpoint's query must subclass ListQuery")
        if call_limited and "call_id" not in _PATH_PARAM.findall(path):
            raise ValueError(f"{method} {path}: call_limited needs a {{call_id}} path parameter")
        if unknown := sorted(s for s in errors if s not in ERROR_DESCRIPTIONS):
            raise ValueError(f"{method} {path}: no description for error statuses {unknown}")
        if body is not None and method in ("GET", "DELETE"):
            raise ValueError(f"{method} {path}: no request body on {method}")
        if path.count("{") != len(_PATH_PARAM.findall(path)):
            raise ValueError(f"{method} {path}: path parameters are plain {{name}} (no regular expressions)")
        if not 200 <= status < 300 or (many and response is None) or (raw and response is not None):
            raise ValueError(f"{method} {path}: status must be 2xx, many needs a response, raw takes none")
        if raw and method != "GET":
            raise ValueError(f"{method} {path}: raw routes are GETs (a WebSocket upgrade or a file)")
        if media_type is not None and not raw:
            raise ValueError(f"{method} {path}: media_type is for raw routes (a file download)")

        def register(handler: Handler) -> Handler:
            doc = (handler.__doc__ or "").strip()
            first, _, rest = doc.partition("\n")
            self._operations.append(
                Operation(
                    method=method,
                    path=path,
                    handler=handler,
                    operation_id=operation_id or _camel(handler.__name__),
                    tag=tag or self.tag or path.strip("/").split("/")[0],
                    summary=summary or first.strip() or handler.__name__.replace("_", " "),
                    description=description if description is not None else _dedent(rest),
                    body=body,
                    query=query,
                    response=response,
                    many=many,
                    status=status,
                    scopes=check_scopes(frozenset(scopes)),
                    public=public,
                    raw=raw,
                    call_limited=call_limited,
                    errors=frozenset(errors),
                    query_lists=query_list_fields(query) if query is not None else frozenset(),
                    media_type=media_type,
                )
            )
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)


def _camel(name: str) -> str:
    head, *rest = name.strip("_").split("_")
    return head + "".join(word.capitalize() for word in rest)


def _dedent(text: str) -> str:
    lines = text.splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in lines).strip()
