"""The policy versions known to this process: synced from the policy file into the database at start-up."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from dunning_svc import repository as repo
from dunning_svc.domain import Ledger, Policy, select_policy
from dunning_svc.policies import PolicySpec

_SELECTED_MAX = 10_000


class PolicyBook:
    """Every stored version (cases keep theirs) and, in file order, the newest version of each current policy."""

    def __init__(self, current: Sequence[Policy], versions: dict[tuple[str, int], Policy]) -> None:
        self.current = list(current)
        self.versions = versions
        self._selected: dict[tuple[object, ...], Policy] = {}

    def select(self, ledger: Ledger) -> Policy:
        """The policy matching the client now. A match reads only the profile's segment and tags, the open
        balance per currency and the average payment delay: the choice is remembered per such key (clients of
        a scheduler batch share a few), bounded."""
        profile = ledger.profile
        balances = ledger.open_balances()
        key = (
            (profile.segment, profile.tags) if profile is not None else None,
            tuple(balances.items()),
            ledger.avg_payment_delay,
        )
        found = self._selected.get(key)
        if found is None:
            found = select_policy(self.current, profile, balances, ledger.avg_payment_delay)
            if len(self._selected) >= _SELECTED_MAX:
                self._selected.clear()
            self._selected[key] = found
        return found

    def pinned(self, name: str | None, version: int | None) -> Policy | None:
        if name is None or version is None:
            return None
        return self.versions.get((name, version))

    @classmethod
    def from_specs(cls, specs: Sequence[PolicySpec], version: int = 1) -> PolicyBook:
        pols = [s.to_domain(version) for s in specs]
        return cls(pols, {(p.name, p.version): p for p in pols})


async def sync_policies(
    session: AsyncSession, specs: Sequence[PolicySpec], source: str, now: datetime
) -> PolicyBook:
    """Store a new version of every policy whose definition changed; load every version (caller commits)."""
    stored = await repo.policy_versions(session)
    latest: dict[str, dict[str, object]] = {}
    for row in stored:
        latest[row["name"]] = row
    current: list[Policy] = []
    versions: dict[tuple[str, int], Policy] = {}
    for row in stored:
        spec = PolicySpec.model_validate_json(row["definition"])
        versions[(row["name"], row["version"])] = spec.to_domain(row["version"])
    for spec in specs:
        digest = spec.digest()
        last = latest.get(spec.name)
        if last is not None and last["digest"] == digest:
            version = int(last["version"])  # type: ignore[call-overload]
        else:
            version = int(last["version"]) + 1 if last is not None else 1  # type: ignore[call-overload]
            await repo.add_policy_version(
                session, spec.name, version, digest, json.dumps(spec.model_dump(mode="json")), source, now
            )
            versions[(spec.name, version)] = spec.to_domain(version)
        current.append(versions[(spec.name, version)])
    return PolicyBook(current, versions)
