"""Equal parsed specs, and equal parts of specs, are one object (models/base.Interner)."""

from __future__ import annotations

import copy
import gc
from typing import Any

from stronghold_operator.models.base import Interner, parse
from stronghold_operator.models.health import HealthPolicySpec

SPEC: dict[str, Any] = {
    "interval": "10s",
    "checks": [
        {"name": "web", "http": {"url": "http://127.0.0.1:8000/health/"}},
        {
            "name": "db",
            "postgres": {
                "host": "127.0.0.1",
                "database": "app",
                "user": "app",
                "password": {"secretKeyRef": {"name": "db", "key": "password"}},
            },
        },
        {"name": "cache", "memcached": {"address": "127.0.0.1:11211"}},
    ],
}


def spec(**changes: Any) -> HealthPolicySpec:
    raw = copy.deepcopy(SPEC)
    for index, check in changes.items():
        raw["checks"][int(index[1:])].update(check)
    return parse(HealthPolicySpec, raw)


def test_equal_specs_are_one_object_and_compare_equal_to_a_fresh_parse() -> None:
    intern = Interner()
    a, b = intern(spec()), intern(spec())
    assert a is b
    assert a == spec()
    assert a.model_dump(by_alias=True) == spec().model_dump(by_alias=True)


def test_specs_that_differ_share_their_equal_parts_only() -> None:
    intern = Interner()
    a = intern(spec())
    b = intern(spec(c0={"http": {"url": "http://web.other.svc/health/"}}))
    assert a is not b
    assert a.checks[0] is not b.checks[0]
    assert a.checks[0].http is not None and b.checks[0].http is not None
    assert a.checks[0].http.url != b.checks[0].http.url
    assert a.checks[1] is b.checks[1] and a.checks[2] is b.checks[2]


def test_a_field_set_to_its_default_is_not_the_unset_field() -> None:
    # Overrides read model_fields_set: a value written out must stay distinguishable.
    intern = Interner()
    a = intern(spec())
    url = {"url": "http://127.0.0.1:8000/health/"}
    b = intern(spec(c0={"http": {**url, "followRedirects": False}}))
    assert a.checks[0].http is not None and b.checks[0].http is not None
    assert a.checks[0].http.follow_redirects == b.checks[0].http.follow_redirects
    assert a.checks[0].http is not b.checks[0].http
    assert "follow_redirects" in b.checks[0].http.model_fields_set
    assert "follow_redirects" not in a.checks[0].http.model_fields_set


def test_sweep_drops_what_no_policy_holds() -> None:
    intern = Interner()
    kept = intern(spec())
    size = len(intern)
    gone = intern(spec(c0={"http": {"url": "http://gone/"}}))
    assert len(intern) > size
    del gone
    gc.collect()
    intern.sweep()
    assert len(intern) == size
    assert intern(spec()) is kept


def test_the_table_sweeps_itself_as_it_grows() -> None:
    intern = Interner()
    for i in range(3000):
        intern(spec(c0={"http": {"url": f"http://web-{i}/"}}))
    assert len(intern) < 2500  # policies replaced long ago do not pile up
