"""The AI-initiative review gate: six criteria every use case passes before it gets GPUs.

The use-case file's `review:` section (typed by `ReviewGate`) records the answers; `evaluate`
judges them. Pure (pydantic only), so the use-case schema, `tandem gate` and the policy pack
share one definition of "approved":

    review:
      date: 2026-11-20                 # when the board reviewed it (default: today)
      durable_advantage: "Ten years of labelled claims no competitor has"
      consumers: [claims-triage, underwriting]        # >= 2 use cases or teams
      kpi:
        name: median claim handling time
        baseline: 14 min
        target: 9 min
        target_date: 2027-02-10        # within 90 days of the review date
      cto_assessment: https://wiki.example.com/ai/claims-assistant/cto-assessment
      data_audit: {completed: true, date: 2026-11-02}
      maintenance:
        owner: claims-ml@example.com
        plan: https://wiki.example.com/ai/claims-assistant/18-month-plan
        horizon_months: 18

How it reaches the engine: the UseCase component registers a ConfigMap labelled
`tandem.dev/component: usecase-manifest` and `tandem.dev/use-case: <name>` whose data
`review.json` is `manifest_data(review)`; the `usecase-review-gate` stack policy reads it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

from vocabulary.review import PLAN_HORIZON_MONTHS, ReviewGate

KPI_HORIZON_DAYS = 90
MIN_CONSUMERS = 2
CRITERIA = (
    "strategic alignment",
    "reusability",
    "measurability",
    "feasibility",
    "data quality",
    "maintainability",
)
_PLACEHOLDERS = {"", "tbd", "tbc", "todo", "n/a", "na", "none", "-", "?", "unknown", "later"}
_URL = re.compile(r"^https?://[^\s/]+\.[^\s]+$")


@dataclass(frozen=True)
class CriterionResult:
    criterion: str
    ok: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _given(value: object) -> bool:
    return value is not None and str(value).strip().lower() not in _PLACEHOLDERS


def _strategic(r: ReviewGate, _: date) -> tuple[bool, str]:
    adv = (r.durable_advantage or "").strip()
    if not _given(adv):
        return False, "no durable advantage named (durable_advantage)"
    if len(adv.split()) < 3:
        return False, f"durable advantage {adv!r} is too vague: name what competitors cannot copy"
    return True, f"durable advantage: {adv}"


def _reusability(r: ReviewGate, _: date) -> tuple[bool, str]:
    consumers = sorted({c.strip() for c in r.consumers if _given(c)})
    if len(consumers) < MIN_CONSUMERS:
        return False, (
            f"{len(consumers)} consuming use case(s)/team(s) {consumers}; "
            f"at least {MIN_CONSUMERS} needed (consumers)"
        )
    return True, f"{len(consumers)} consumers: {', '.join(consumers)}"


def _measurability(r: ReviewGate, today: date) -> tuple[bool, str]:
    k = r.kpi
    missing = [
        f"kpi.{f}"
        for f in ("name", "baseline", "target", "target_date")
        if not _given(getattr(k, f))
    ]
    if missing:
        return False, f"KPI incomplete: missing {', '.join(missing)}"
    assert k.target_date is not None
    if str(k.baseline).strip() == str(k.target).strip():
        return False, f"KPI target {k.target} equals its baseline: nothing would improve"
    deadline = today + timedelta(days=KPI_HORIZON_DAYS)
    if k.target_date <= today:
        return False, f"KPI target date {k.target_date} is not after the review date {today}"
    if k.target_date > deadline:
        return False, (
            f"KPI target date {k.target_date} is more than {KPI_HORIZON_DAYS} days after "
            f"{today} (latest {deadline})"
        )
    return True, f"{k.name}: {k.baseline} -> {k.target} by {k.target_date}"


def _feasibility(r: ReviewGate, _: date) -> tuple[bool, str]:
    link = (r.cto_assessment or "").strip()
    if not _given(link):
        return False, "no link to the written CTO assessment (cto_assessment)"
    if not _URL.match(link):
        return False, f"cto_assessment {link!r} is not a link (http(s)://...)"
    return True, f"CTO assessment: {link}"


def _data_quality(r: ReviewGate, today: date) -> tuple[bool, str]:
    a = r.data_audit
    if not a.completed:
        return False, "data audit not completed (data_audit.completed)"
    if a.date is None:
        return False, "data audit has no date (data_audit.date)"
    if a.date > today:
        return False, f"data audit date {a.date} is after the review date {today}"
    return True, f"data audit completed {a.date}"


def _maintainability(r: ReviewGate, _: date) -> tuple[bool, str]:
    m = r.maintenance
    if not _given(m.owner):
        return False, "no owner (maintenance.owner)"
    if not _given(m.plan):
        return False, "no maintenance plan (maintenance.plan)"
    if m.horizon_months < PLAN_HORIZON_MONTHS:
        return (
            False,
            f"maintenance plan covers {m.horizon_months} months; {PLAN_HORIZON_MONTHS} needed",
        )
    return True, f"owner {m.owner}, {m.horizon_months}-month plan"


_CHECKS = (_strategic, _reusability, _measurability, _feasibility, _data_quality, _maintainability)


def evaluate(
    review: ReviewGate | dict[str, Any] | None,
    today: date | None = None,
    use_case: str | None = None,
) -> list[CriterionResult]:
    """The six criteria, in order, each passed or failed with the reason a reviewer reads.

    `use_case` is the use case's own name: it does not count as one of its consumers.
    """
    if review is None:
        return [CriterionResult(c, False, "the use case has no review: section") for c in CRITERIA]
    r = review if isinstance(review, ReviewGate) else ReviewGate.model_validate(review)
    if use_case:
        r = r.model_copy(update={"consumers": [c for c in r.consumers if c.strip() != use_case]})
    when = r.date or today or date.today()
    return [
        CriterionResult(name, *check(r, when))
        for name, check in zip(CRITERIA, _CHECKS, strict=True)
    ]


def passed(results: list[CriterionResult]) -> bool:
    return all(r.ok for r in results)
