"""The dashboard's reads over HTTP (``/admin``'s data, docs/operations.md).

:class:`DashboardRoutes` answers, after the operator routes' gate (the admin
token, or loopback when none is set):

- ``GET /api/rooms?q=&offset=&limit=`` and ``GET /api/sessions?q=&offset=&limit=``:
  one page, searched and paged in the backend (``{"rooms"|"sessions": [...],
  "total", "offset", "limit", "q"}``); without any of the three parameters these
  routes are not this module's and answer as they always have;
- ``GET /api/dashboard/servers``: every relay with its liveness state, uptime
  and past degraded periods, and ``adminToken``: whether this relay has an admin
  token (without one the page is read-only and asks for none);
- ``GET /api/dashboard/samples``: the last 15 minutes of samples of every relay
  and of the cluster.

The actions of the page are the existing routes (notify, kick, lift, a user's
disconnect); nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus

from stomprelay.api import ApiError
from stomprelay.dashboard import Dashboard, PageQuery, Row, page_query
from stomprelay.transport.http import Answer, json_answer

#: The routes this module always serves (the list routes only with a page asked for).
ROUTES = ("/api/dashboard/servers", "/api/dashboard/samples")


class DashboardRoutes:
    """See the module docstring."""

    def __init__(self, dashboard: Dashboard, *, admin_token: bool = False) -> None:
        self.dashboard = dashboard
        #: Whether the relay has an admin token (``--admin-token``): the page's actions
        #: and its sign-in need one; the API key (``--api-key``) stands for none.
        self.admin_token = admin_token
        self._lists: dict[str, Callable[[PageQuery], Awaitable[Row]]] = {
            "/api/rooms": dashboard.rooms,
            "/api/sessions": dashboard.sessions,
        }
        self._views: dict[str, Callable[[], Awaitable[Row]]] = {
            "/api/dashboard/servers": dashboard.servers,
            "/api/dashboard/samples": dashboard.samples,
        }

    async def answer(self, path: str, query: str) -> Answer | None:
        """The answer to ``GET path?query``; None when it is not this module's."""
        view = self._views.get(path)
        if view is not None:
            shown = await view()
            if path == "/api/dashboard/servers":
                shown = {**shown, "adminToken": self.admin_token}
            return json_answer(HTTPStatus.OK, shown)
        listing = self._lists.get(path)
        if listing is None:
            return None
        try:
            page = page_query(query)
        except ApiError as exc:
            return json_answer(HTTPStatus(exc.status), exc.as_json())
        if page is None:
            return None
        return json_answer(HTTPStatus.OK, await listing(page))
