"""The floors cover the whole house: every package of the repository sits on one floor.

`lint-imports` (make imports) checks the floors contract in `.importlinter`, but only for the
packages the contract names: a new top-level package left out of it would be checked by nothing.
This test fails instead, naming the package and the file to edit.
"""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Outside the floors on purpose: they may import any floor and nothing imports them.
NOT_ON_A_FLOOR = {"tests", "benchmarks", "stacks", "docs"}
ROOT_MODULES = {"__main__.py"}  # the Pulumi program's entry: `tandem.program.main()`


def _contract() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(REPO / ".importlinter")
    return parser


def _floors() -> list[set[str]]:
    layers = _contract()["importlinter:contract:floors"]["layers"].strip().splitlines()
    return [{m.strip() for m in line.replace(":", "|").split("|")} for line in layers]


def _packages() -> set[str]:
    return {
        p.parent.name
        for p in REPO.glob("*/__init__.py")
        if p.parent.name not in NOT_ON_A_FLOOR and not p.parent.name.startswith(".")
    }


def test_every_package_is_on_exactly_one_floor() -> None:
    floors = _floors()
    for package in sorted(_packages()):
        on = [i for i, floor in enumerate(floors) if package in floor]
        assert len(on) == 1, (
            f"package {package!r} is on {len(on)} floors of .importlinter's floors contract; "
            "add it to exactly one (docs/architecture.md says which floor fits)"
        )


def test_every_package_is_analysed() -> None:
    roots = set(_contract()["importlinter"]["root_packages"].split())
    assert _packages() <= roots, f"add {sorted(_packages() - roots)} to root_packages"
    assert roots <= _packages() | NOT_ON_A_FLOOR


def test_no_loose_modules_at_the_root() -> None:
    loose = {p.name for p in REPO.glob("*.py")} - ROOT_MODULES
    assert not loose, f"{sorted(loose)}: put each module in the package of its floor"


def test_domain_packages_carry_no_pulumi_and_no_test_helpers() -> None:
    """Components live under components/, test helpers under tests/support/ (DESIGN.md)."""
    contract = _contract()
    no_pulumi = set(contract["importlinter:contract:runtime-no-pulumi"]["source_modules"].split())
    domain = set().union(*_floors()[2:])
    assert domain <= no_pulumi, f"{sorted(domain - no_pulumi)} must be in runtime-no-pulumi"
    helpers = [
        str(p.relative_to(REPO))
        for package in _packages()
        for p in (REPO / package).rglob("*.py")
        if p.stem in {"testing", "fixtures"} or p.stem.startswith("test_")
    ]
    assert not helpers, f"{helpers}: test helpers belong in tests/support/"
