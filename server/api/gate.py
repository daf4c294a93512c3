"""The one gate in front of the API: auth, then draining, then loading, for HTTP and WebSocket.

Routes declare it as a dependency (`Depends(admit)` for transcription, `Depends(authorize)`
for key-only routes such as `/v1/models`), so REST, streaming and any later route family share
one rule. A dependency runs before the route reads its body; a refusal raised here is rendered
by the app's single error handler, as a JSON reply or as a refused WebSocket handshake.

Browsers cannot set headers on a WebSocket, so a stream may carry its key as the subprotocol
pair `token, KEY` instead; the header wins when both are present.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from server.api.auth import key_matches, parse_authorization, parse_subprotocols
from server.errors import Draining, Loading, Unauthorized


def presented_key(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header:
        return parse_authorization(header)
    if conn.scope["type"] == "websocket":
        return parse_subprotocols(list(conn.scope.get("subprotocols") or []))[1]
    return None


def authorize(conn: HTTPConnection) -> None:
    """Refuse unless auth is off or the connection carries a configured key."""
    digests = conn.app.state.settings.key_digests
    if not digests:
        return
    key = presented_key(conn)
    if key is None:
        raise Unauthorized("Invalid credentials. No Authorization header.")
    if not key_matches(key, digests):
        raise Unauthorized("Invalid credentials.")


def admit(conn: HTTPConnection) -> None:
    """Auth, then: not while draining, not before the models are loaded."""
    authorize(conn)
    state = conn.app.state
    if state.draining:
        raise Draining("Server is shutting down", retry_after=5)
    if not state.engine.ready:
        raise Loading("Models are still loading", retry_after=5)
