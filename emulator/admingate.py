"""The control plane's one access check: the admin token (``--admin-token``) and the
dashboard's session cookie."""

from __future__ import annotations

import hmac

from starlette.requests import cookie_parser
from starlette.types import Scope

from emulator.errors import AdminTokenRequired

SAMPLES_PATH = "/_emulator/samples"
#: The dashboard's sign-in page (open: it asks for the admin token).
UI_LOGIN_PATH = "/_emulator/ui/login"
#: The dashboard's session cookie (HttpOnly, SameSite=Strict), and the label its value signs.
SESSION_COOKIE = "rmbg_emulator_admin"
SESSION_LABEL = b"rmbg-emulator dashboard session"


class AdminGate:
    """The control plane's one access check (``Settings.admin_token``, ``--admin-token``).

    With a token set, a request to ``/_emulator/*`` must carry ``Authorization: Bearer
    <token>`` (scheme case-insensitive, RFC 6750), or the dashboard's session cookie
    (:data:`SESSION_COOKIE`, set by ``/_emulator/ui/login?token=...``: a browser sends no
    header when it navigates), except result files (``/_emulator/files/...``: vendor clients
    download them with no token), samples (``/_emulator/samples...``: input images for jobs)
    and the dashboard's login page. Without a token everything is open.
    """

    def __init__(self, token: str | None) -> None:
        self.token = token.encode("ascii") if token is not None else None

    def accepts(self, token: bytes) -> bool:
        """Whether ``token`` is the admin token (constant-time); always true without one."""
        return self.token is None or hmac.compare_digest(token.strip(), self.token)

    def session(self) -> str:
        """The dashboard cookie's value: an HMAC-SHA256 of a fixed label under the admin token
        (hex), so the cookie is not the token itself; ``""`` without a token."""
        if self.token is None:
            return ""
        return hmac.new(self.token, SESSION_LABEL, "sha256").hexdigest()

    def _has_session(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"cookie":
                given = cookie_parser(value.decode("latin-1")).get(SESSION_COOKIE, "")
                if hmac.compare_digest(given.encode("latin-1"), self.session().encode()):
                    return True
        return False

    def check(self, scope: Scope) -> AdminTokenRequired | None:
        """``None`` when the control-plane request in ``scope`` may pass, else the 401 to
        refuse it with (rendered as ``{"detail": ...}`` JSON, the control plane's error shape,
        with ``WWW-Authenticate: Bearer``: :func:`emulator.middleware.control_plane_error`)."""
        if self.token is None:
            return None
        path: str = scope["path"]
        if path in (SAMPLES_PATH, UI_LOGIN_PATH) or path.startswith(SAMPLES_PATH + "/"):
            return None
        if self._has_session(scope):
            return None
        given: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        if given is None:
            return AdminTokenRequired(
                "the control plane needs 'Authorization: Bearer <admin token>' "
                "(this emulator was started with --admin-token); in a browser, sign in at "
                f"{UI_LOGIN_PATH}", error=None)
        scheme, _, credentials = given.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not self.accepts(credentials):
            return AdminTokenRequired("the admin token in 'Authorization: Bearer ...' is wrong",
                                      error="invalid_token")
        return None


__all__ = ["SESSION_COOKIE", "SESSION_LABEL", "UI_LOGIN_PATH", "AdminGate"]
