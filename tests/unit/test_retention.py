"""Retention (logic.retention): the one copy of the rules, which the operator and the Job use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from stronghold_operator.logic import retention as lb

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def arch(days_ago: float, verified: bool = True, n: int = 0) -> lb.Archive:
    t = T0 - timedelta(days=days_ago)
    return lb.Archive(f"db_backup_{t:%Y%m%d_%H%M%S}{n}.sql.gz", t, verified)


def test_retention_by_age_and_min_keep() -> None:
    items = [arch(1), arch(10), arch(40), arch(50), arch(60)]
    plan = lb.plan_retention(items, T0, days=30, min_keep=3)
    assert set(plan.delete) == {items[3].file, items[4].file}
    plan2 = lb.plan_retention(items, T0, days=5, min_keep=3)
    assert set(plan2.delete) == {items[3].file, items[4].file}
    assert plan2.why[items[2].file] == "minKeep"


def test_unverified_never_count_and_newest_verified_always_kept() -> None:
    items = [arch(40, False), arch(41, False), arch(42, False), arch(90)]
    plan = lb.plan_retention(items, T0, days=30, min_keep=3)
    assert items[3].file in plan.keep and plan.why[items[3].file] == "newest verified"
    assert set(plan.delete) == {i.file for i in items[:3]}


def test_protected_files_are_kept() -> None:
    items = [arch(1), arch(2), arch(3), arch(100)]
    plan = lb.plan_retention(items, T0, days=30, min_keep=1, protected={items[3].file})
    assert plan.delete == ()


archives = st.lists(
    st.builds(
        arch,
        st.floats(min_value=0, max_value=100),
        st.booleans(),
        st.integers(min_value=0, max_value=9),
    ),
    max_size=40,
    unique_by=lambda a: a.file,
)


@settings(max_examples=150, deadline=None)
@given(items=archives, days=st.integers(0, 60), min_keep=st.integers(1, 10))
def test_retention_properties(items: list[lb.Archive], days: int, min_keep: int) -> None:
    plan = lb.plan_retention(items, T0, days, min_keep)
    by_file = {a.file: a for a in items}
    assert set(plan.keep) | set(plan.delete) == set(by_file)
    assert not set(plan.keep) & set(plan.delete)
    verified = sorted((a for a in items if a.verified), key=lambda a: a.taken, reverse=True)
    if verified:
        assert verified[0].file in plan.keep
    kept_verified = [f for f in plan.keep if by_file[f].verified]
    assert len(kept_verified) >= min(min_keep, len(verified))
    for f in plan.delete:
        assert by_file[f].taken < T0 - timedelta(days=days)
    # Applying the plan again deletes nothing more: retention is idempotent.
    again = lb.plan_retention([by_file[f] for f in plan.keep], T0, days, min_keep)
    assert again.delete == ()


def test_file_time_parses_guide_names() -> None:
    assert lb.file_time("db_backup_20260501_020000.sql.gz") == datetime(2026, 5, 1, 2, tzinfo=UTC)
    assert lb.file_time("db_backup_20260501_020000.dump") is not None
    assert lb.file_time(".db_backup_20260501_020000.sql.gz.partial") is None


def test_every_archive_corrupt_keeps_everything_and_says_why() -> None:
    """Defect: with every verified archive found corrupt, the age rule deleted all of them."""
    items = [arch(40, False), arch(50, False), arch(60, False)]
    plan = lb.plan_retention(items, T0, days=30, min_keep=3)
    assert plan.delete == ()
    assert set(plan.keep) == {a.file for a in items}
    assert plan.held == lb.HELD_NO_VERIFIED
    assert "3 older than 30 days are kept" in plan.message


def test_manifests_lost_keeps_everything() -> None:
    """Intact archives whose manifests are gone count as unverified: none may be deleted."""
    items = [arch(31, False, 1), arch(32, False, 2), arch(100, False, 3)]
    plan = lb.plan_retention(items, T0, days=30, min_keep=1)
    assert plan.delete == () and plan.held == lb.HELD_NO_VERIFIED
    assert plan.why[items[2].file] == "no verified archive remains"


def test_nothing_to_hold_when_nothing_is_old() -> None:
    plan = lb.plan_retention([arch(1, False), arch(2, False)], T0, days=30, min_keep=3)
    assert plan.delete == () and plan.held is None
    assert lb.plan_retention([], T0, days=30, min_keep=3) == lb.RetentionPlan((), (), {})


@settings(max_examples=150, deadline=None)
@given(items=archives, days=st.integers(0, 60), min_keep=st.integers(1, 10))
def test_retention_never_leaves_zero_archives(
    items: list[lb.Archive], days: int, min_keep: int
) -> None:
    plan = lb.plan_retention(items, T0, days, min_keep)
    if items:
        assert plan.keep
        assert any(by.verified for by in items if by.file in plan.keep) or not plan.delete
