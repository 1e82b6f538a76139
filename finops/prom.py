"""A small Prometheus HTTP API client (stdlib only: the report must run wherever Python does)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import numpy as np


class PromError(RuntimeError):
    pass


@dataclass
class Series:
    labels: dict[str, str]
    times: np.ndarray  # epoch seconds
    values: np.ndarray


class PromClient:
    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, path: str, params: dict[str, str]) -> dict:
        body = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(self.url + path, data=body, method="POST")
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                payload = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            if exc.code == 404:
                raise PromError(
                    f"{self.url}{path} answered 404: is {self.url} a Prometheus (its base URL, "
                    "without /graph or a path)?"
                ) from None
            raise PromError(f"{path} {exc.code}: {detail}\nquery: {params.get('query')}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PromError(
                f"cannot reach Prometheus at {self.url}: {reason}; is it running and is the URL "
                "right? (`tandem finops demo` starts a local one with a simulated fleet)"
            ) from None
        except json.JSONDecodeError:
            raise PromError(f"{self.url}{path} did not answer JSON: is it a Prometheus?") from None
        if payload.get("status") != "success":
            raise PromError(f"{payload.get('error')}\nquery: {params.get('query')}")
        return payload["data"]

    def query(self, expr: str, at: float) -> list[Series]:
        data = self._call("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        out = []
        for r in data["result"]:
            if "values" in r:  # a range-vector selector: raw samples
                out.append(_series(r))
            else:
                t, v = r["value"]
                out.append(Series(r["metric"], np.array([float(t)]), np.array([float(v)])))
        return out

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        data = self._call(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        return [_series(r) for r in data["result"]]


def _series(r: dict) -> Series:
    arr = np.array(r["values"], dtype=object)
    return Series(r["metric"], arr[:, 0].astype(float), arr[:, 1].astype(float))
