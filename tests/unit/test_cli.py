"""The stronghold command line parses as documented."""

from __future__ import annotations

import logging

import pytest

from stronghold_operator.cli import build_parser


def test_run_flags() -> None:
    args = build_parser(["run"]).parse_args(
        [
            "run",
            "-n",
            "a",
            "-n",
            "b",
            "--standalone",
            "--liveness",
            "http://0.0.0.0:8080/healthz",
            "--log-format",
            "json",
            "--verbose",
        ]
    )
    assert args.namespace == ["a", "b"]
    assert args.standalone and args.verbose
    assert args.log_format == "json"


def test_budget_flags() -> None:
    args = build_parser(["run"]).parse_args(
        ["run", "--api-qps", "20", "--api-burst", "40", "--events-qps", "0.5"]
    )
    assert (args.api_qps, args.api_burst, args.events_qps, args.events_burst) == (
        20.0,
        40,
        0.5,
        None,
    )
    for bad in (["--api-qps", "0"], ["--api-burst", "1.5"], ["--events-burst", "-1"]):
        with pytest.raises(SystemExit):
            build_parser(["run"]).parse_args(["run", *bad])


def test_allow_privileged_jobs_flag() -> None:
    def parse(*extra: str) -> object:
        return build_parser(["run"]).parse_args(["run", *extra]).allow_privileged_jobs

    assert parse() is None
    assert parse("--allow-privileged-jobs") == "all"
    assert parse("--allow-privileged-jobs=securityContext,hostNetwork") == (
        "hostNetwork,securityContext"
    )
    with pytest.raises(SystemExit):
        parse("--allow-privileged-jobs=hostPID")


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        build_parser(["run"]).parse_args(["run", "-n", "a", "--all-namespaces"])


@pytest.mark.parametrize("command", ["cluster", "services"])
def test_the_product_command_has_no_testbed_verbs(command: str) -> None:
    with pytest.raises(SystemExit):
        build_parser([command]).parse_args([command, "up"])


def test_only_the_watch_handlers_routine_success_is_dropped() -> None:
    from stronghold_operator.cli.run import _routine_success

    def record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)

    assert not _routine_success(record("Handler 'track' succeeded."))
    assert not _routine_success(record("Handler 'backup-track' succeeded."))
    assert not _routine_success(record("Indexer 'maintenance_windows' succeeded."))
    assert _routine_success(record("Handler 'validate' succeeded."))
    assert _routine_success(record("Handler 'track' failed with an exception.", logging.ERROR))


def test_a_refused_apply_is_logged_at_info() -> None:
    from stronghold_operator.cli.run import _refusal_is_info

    def record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)

    refused = record("Webhook 'validate-scalingpolicies' failed permanently: minReplicas (5) ...")
    assert _refusal_is_info(refused)
    assert (refused.levelno, refused.levelname) == (logging.INFO, "INFO")
    other = record("Handler 'validate' failed permanently: boom")
    assert _refusal_is_info(other) and other.levelno == logging.ERROR
