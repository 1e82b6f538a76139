"""Stage 1, authenticate: which API key (and so which team) is calling, and which developer.

Keys are stored as SHA-256 digests; the presented key is hashed and compared in constant time.
OpenAI clients send `Authorization: Bearer <key>`; Anthropic clients (Claude Code) `x-api-key`
(or a bearer token, with ANTHROPIC_AUTH_TOKEN), which the Messages endpoint accepts too.
A routes file without keys turns authentication off (local development): every caller is the
anonymous key of team `anonymous`.

A developer is known in one of two ways: the key is one developer's own (`developer:`), or it is
a team key held by an identity-aware proxy that names the developer in a header
(`developer_header:`). The header is trusted on such keys only: a developer holding a personal
key cannot claim to be someone else, and the proxy's key never leaves the proxy.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from gateway.config import ANONYMOUS, Compiled, CompiledKey
from gateway.errors import GatewayError


def authenticate(
    compiled: Compiled, authorization: str | None, api_key: str | None = None
) -> CompiledKey:
    """The key presented as `Authorization: Bearer <key>` or, where `api_key` is passed (the
    Messages endpoint), as `x-api-key`."""
    if not compiled.auth_required:
        return ANONYMOUS
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GatewayError(
                401, "Authorization header must be 'Bearer <key>'.", "invalid_api_key"
            )
    elif api_key:
        token = api_key
    else:
        how = "'x-api-key: <key>' or " if api_key is not None else ""
        raise GatewayError(
            401, f"Missing API key: send {how}'Authorization: Bearer <key>'.", "missing_api_key"
        )
    digest = hashlib.sha256(token.strip().encode()).digest()
    key = compiled.keys.get(digest)
    if key is None or not hmac.compare_digest(key.digest, digest):
        raise GatewayError(401, "Incorrect API key provided.", "invalid_api_key")
    return key


def developer_of(compiled: Compiled, key: CompiledKey, headers: Mapping[str, str]) -> str | None:
    """The developer behind this request: the key's own, or the proxy's header on a team key."""
    if key.developer:
        return key.developer
    if not key.developer_header:
        return None
    developer = headers.get(key.developer_header, "").strip()
    if not developer:
        raise GatewayError(
            401,
            f"This key is a proxy's: the request must name the developer in the "
            f"'{key.developer_header}' header.",
            "missing_developer",
        )
    roster = compiled.rosters.get(key.team)
    if roster and developer not in roster:
        raise GatewayError(
            403,
            f"Developer '{developer}' is not on team '{key.team}'s roster.",
            "developer_not_allowed",
        )
    return developer
