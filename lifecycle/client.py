"""The controller's HTTP API from the operator's side (`tandem deploy`, `tandem rollout`)."""

from __future__ import annotations

from typing import Any

from lifecycle.http import HttpError, call
from lifecycle.plan import RolloutPlan


class ControllerError(RuntimeError):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ControllerClient:
    def __init__(self, url: str, timeout: float = 15.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"controller URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return call(method, self.url + path, body, timeout=self.timeout)
        except HttpError as exc:
            if exc.status == 0:
                raise ControllerError(
                    f"the rollout controller at {self.url} cannot be reached ({exc}); is it "
                    "running (`tandem rollout controller`, or kubectl port-forward to it)?"
                ) from None
            detail = exc.body.get("error") if isinstance(exc.body, dict) else exc.body
            raise ControllerError(str(detail), exc.status) from None

    def start(self, plan: RolloutPlan) -> dict[str, Any]:
        return self._call("POST", "/rollouts", {"plan": plan.to_dict()})

    def status(self, use_case: str) -> dict[str, Any]:
        return self._call("GET", f"/rollouts/{use_case}")

    def all(self) -> list[dict[str, Any]]:
        return self._call("GET", "/rollouts")["rollouts"]

    def act(self, use_case: str, action: str, reason: str = "") -> dict[str, Any]:
        return self._call("POST", f"/rollouts/{use_case}/{action}", {"reason": reason})
