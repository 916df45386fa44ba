"""Configuration: env, flags, defaults and one-line errors (DESIGN §6)."""

from __future__ import annotations

import argparse
import os
import socket
from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumer.config import OPTIONS, Settings, add_options, load
from kernel.errors import ConfigError

COMMANDS = ("run", "setup", "status", "demo")


def test_run_defaults() -> None:
    settings = load("run", env={})
    assert settings == Settings(worker_id=f"{socket.gethostname()}-{os.getpid()}")
    assert (settings.stream, settings.table) == ("telemax-stream", "TELEMAX")
    assert (settings.lease_table, settings.dlq_table) == ("telemax-leases", "TELEMAX-deadletter")
    assert (settings.member_table, settings.member_table_name) == ("", "telemax-leases-members")
    assert settings.initial_position == "TRIM_HORIZON"
    assert settings.initial_timestamp is None
    assert settings.lease_duration_s == 10.0
    assert settings.metrics_port == 9108
    assert settings.log_level == "info"
    assert settings.shards == 2
    assert settings.handler == "consumer.feeds.telemax:to_item"


def test_env_is_read_from_mapping_not_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMAX_STREAM", "from-process")
    assert load("run", env={}).stream == "telemax-stream"
    assert load("run", env=None).stream == "from-process"


@pytest.mark.parametrize(
    ("command", "env", "field", "expected"),
    [
        pytest.param("run", {"TELEMAX_STREAM": " s1 "}, "stream", "s1", id="name-stripped"),
        pytest.param("run", {"TELEMAX_TABLE": "T2"}, "table", "T2", id="table"),
        pytest.param("run", {"TELEMAX_MEMBER_TABLE": " m "}, "member_table", "m", id="members"),
        pytest.param("setup", {"TELEMAX_MEMBER_TABLE": "m"}, "member_table", "m", id="setup-m"),
        pytest.param("run", {"TELEMAX_MEMBER_TABLE": "  "}, "member_table", "", id="members-ws"),
        pytest.param("run", {"TELEMAX_WORKER_ID": "w-1"}, "worker_id", "w-1", id="worker-id"),
        pytest.param(
            "run", {"TELEMAX_INITIAL_POSITION": "latest"}, "initial_position", "LATEST", id="pos"
        ),
        pytest.param(
            "run", {"TELEMAX_LEASE_DURATION_S": "2.5"}, "lease_duration_s", 2.5, id="duration"
        ),
        pytest.param("run", {"TELEMAX_METRICS_PORT": "0"}, "metrics_port", 0, id="port-0"),
        pytest.param("run", {"TELEMAX_METRICS_PORT": "65535"}, "metrics_port", 65535, id="port"),
        pytest.param("run", {"TELEMAX_LOG_LEVEL": "DEBUG"}, "log_level", "debug", id="log-lower"),
        pytest.param("demo", {"TELEMAX_LOG_LEVEL": "Warning"}, "log_level", "warning", id="demo"),
        pytest.param("setup", {"TELEMAX_SHARDS": "8"}, "shards", 8, id="shards"),
        pytest.param("run", {"TELEMAX_MAX_RECORDS": "10000"}, "max_records", 10_000, id="max"),
        pytest.param("run", {"TELEMAX_MAX_RECORDS": "1"}, "max_records", 1, id="min-records"),
        pytest.param(
            "run", {"TELEMAX_WRITE_CONCURRENCY": "3"}, "write_concurrency", 3, id="concurrency"
        ),
        pytest.param("run", {"TELEMAX_HANDLER": " a.b:c "}, "handler", "a.b:c", id="handler"),
    ],
)
def test_env_values(command: str, env: dict[str, str], field: str, expected: object) -> None:
    assert getattr(load(command, env=env), field) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC), id="zulu"),
        pytest.param("2026-01-31T12:00:00", datetime(2026, 1, 31, 12, tzinfo=UTC), id="naive"),
        pytest.param(
            "2026-01-31T14:00:00+02:00",
            datetime(2026, 1, 31, 14, tzinfo=timezone(timedelta(hours=2))),
            id="offset",
        ),
    ],
)
def test_at_timestamp(raw: str, expected: datetime) -> None:
    env = {"TELEMAX_INITIAL_POSITION": "AT_TIMESTAMP", "TELEMAX_INITIAL_TIMESTAMP": raw}
    settings = load("run", env=env)
    assert settings.initial_position == "AT_TIMESTAMP"
    assert settings.initial_timestamp == expected
    assert settings.initial_timestamp is not None
    assert settings.initial_timestamp.utcoffset() is not None


def test_at_timestamp_without_timestamp_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load("run", env={"TELEMAX_INITIAL_POSITION": "at_timestamp"})
    message = str(caught.value)
    assert "\n" not in message
    assert "TELEMAX_INITIAL_TIMESTAMP" in message
    assert "AT_TIMESTAMP" in message


def test_flag_beats_env_and_env_beats_default() -> None:
    env = {"TELEMAX_STREAM": "env-stream", "TELEMAX_LEASE_DURATION_S": "4"}
    flags = {"stream": "flag-stream", "lease_duration_s": None, "metrics_port": None}
    settings = load("run", flags, env)
    assert settings.stream == "flag-stream"
    assert settings.lease_duration_s == 4.0
    assert settings.metrics_port == 9108


def test_valid_flag_hides_invalid_env() -> None:
    settings = load("run", {"lease_duration_s": "3"}, {"TELEMAX_LEASE_DURATION_S": "abc"})
    assert settings.lease_duration_s == 3.0


def test_programmatic_flag_values_are_parsed_too() -> None:
    assert load("run", {"metrics_port": 0}, {"TELEMAX_METRICS_PORT": "1234"}).metrics_port == 0


INVALID = [
    ("TELEMAX_LEASE_DURATION_S", "abc", "not a number"),
    ("TELEMAX_LEASE_DURATION_S", "0", "must be a finite number > 0"),
    ("TELEMAX_LEASE_DURATION_S", "-1", "must be a finite number > 0"),
    ("TELEMAX_LEASE_DURATION_S", "nan", "must be a finite number > 0"),
    ("TELEMAX_LEASE_DURATION_S", "", "not a number"),
    ("TELEMAX_LEASE_DURATION_S", "1\n0", "not a number"),
    ("TELEMAX_METRICS_PORT", "http", "not a number"),
    ("TELEMAX_METRICS_PORT", "65536", "must be a port number 0-65535"),
    ("TELEMAX_METRICS_PORT", "-1", "must be a port number 0-65535"),
    ("TELEMAX_METRICS_PORT", "80.5", "not a number"),
    ("TELEMAX_INITIAL_POSITION", "EARLIEST", "must be one of TRIM_HORIZON, LATEST, AT_TIMESTAMP"),
    ("TELEMAX_LOG_LEVEL", "verbose", "must be one of debug, info, warning, error"),
    ("TELEMAX_STREAM", "", "must not be empty"),
    ("TELEMAX_TABLE", "   ", "must not be empty"),
    ("TELEMAX_LEASE_TABLE", "", "must not be empty"),
    ("TELEMAX_DLQ_TABLE", "", "must not be empty"),
    ("TELEMAX_WORKER_ID", "", "must not be empty"),
    ("TELEMAX_INITIAL_TIMESTAMP", "yesterday", "must be an ISO-8601 timestamp"),
    ("TELEMAX_INITIAL_TIMESTAMP", " ", "must not be empty"),
    ("TELEMAX_WRITE_CONCURRENCY", "0", "must be an integer >= 1"),
    ("TELEMAX_WRITE_CONCURRENCY", "1.5", "not a number"),
    ("TELEMAX_MAX_RECORDS", "10001", "must be 1-10000 (the GetRecords limit)"),
    ("TELEMAX_MAX_RECORDS", "0", "must be an integer >= 1"),
    ("TELEMAX_IDLE_POLL_S", "soon", "not a number"),
    ("TELEMAX_CHECKPOINT_INTERVAL_S", "0", "must be a finite number > 0"),
    ("TELEMAX_SHUTDOWN_GRACE_S", "-5", "must be a finite number > 0"),
    ("TELEMAX_HANDLER", "no_colon", "must look like package.module:function"),
    ("TELEMAX_HANDLER", ":func", "must look like package.module:function"),
    ("TELEMAX_HANDLER", "mod:", "must look like package.module:function"),
]


@pytest.mark.parametrize(
    ("var", "raw", "reason"), INVALID, ids=[f"{v}={r!r}" for v, r, _ in INVALID]
)
def test_invalid_env_value_is_one_line_naming_the_variable(var: str, raw: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load("run", env={var: raw})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{var}={raw!r} is invalid: ")
    assert reason in message


def test_invalid_value_message_exactly() -> None:
    with pytest.raises(ConfigError) as caught:
        load("run", env={"TELEMAX_LEASE_DURATION_S": "abc"})
    assert str(caught.value) == "TELEMAX_LEASE_DURATION_S='abc' is invalid: not a number"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_invalid_shards_for_setup() -> None:
    with pytest.raises(ConfigError, match=r"^TELEMAX_SHARDS='0' is invalid: must be an integer"):
        load("setup", env={"TELEMAX_SHARDS": "0"})


def test_invalid_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError) as caught:
        load("run", {"lease_duration_s": "abc"}, {"TELEMAX_LEASE_DURATION_S": "5"})
    assert str(caught.value) == "--lease-duration-s='abc' is invalid: not a number"


@pytest.mark.parametrize("raw", ["inf", "1e999"])
def test_infinite_duration_is_invalid(raw: str) -> None:
    with pytest.raises(ConfigError, match="TELEMAX_LEASE_DURATION_S"):
        load("run", env={"TELEMAX_LEASE_DURATION_S": raw})


@pytest.mark.parametrize(
    ("command", "env"),
    [
        pytest.param("status", {"TELEMAX_LEASE_DURATION_S": "abc"}, id="status-duration"),
        pytest.param("status", {"TELEMAX_INITIAL_POSITION": "AT_TIMESTAMP"}, id="status-pos"),
        pytest.param("setup", {"TELEMAX_METRICS_PORT": "http"}, id="setup-port"),
        pytest.param("setup", {"TELEMAX_WORKER_ID": ""}, id="setup-worker-id"),
        pytest.param("run", {"TELEMAX_SHARDS": "many"}, id="run-shards"),
        pytest.param("demo", {"TELEMAX_STREAM": "", "TELEMAX_TABLE": ""}, id="demo-tables"),
    ],
)
def test_options_of_other_commands_are_ignored(command: str, env: dict[str, str]) -> None:
    settings = load(command, env=env)
    defaults = Settings(worker_id=settings.worker_id)
    assert settings == defaults


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, "telemax-leases-members", id="default"),
        pytest.param({"TELEMAX_LEASE_TABLE": "app-leases"}, "app-leases-members", id="derived"),
        pytest.param({"TELEMAX_MEMBER_TABLE": ""}, "telemax-leases-members", id="empty"),
        pytest.param(
            {"TELEMAX_LEASE_TABLE": "app-leases", "TELEMAX_MEMBER_TABLE": "app-workers"},
            "app-workers",
            id="explicit",
        ),
    ],
)
@pytest.mark.parametrize("command", ["run", "setup", "status", "dlq"])
def test_member_table_name_defaults_to_the_lease_table_name(
    command: str, env: dict[str, str], expected: str
) -> None:
    assert load(command, env=env).member_table_name == expected


def test_member_table_flag_beats_env() -> None:
    settings = load("run", {"member_table": "flagged"}, {"TELEMAX_MEMBER_TABLE": "env"})
    assert settings.member_table_name == "flagged"
    (option,) = [o for o in OPTIONS if o.env == "TELEMAX_MEMBER_TABLE"]
    assert option.flag == "--member-table"


def test_shards_only_read_by_setup() -> None:
    env = {"TELEMAX_SHARDS": "7"}
    assert load("setup", env=env).shards == 7
    assert load("run", env=env).shards == 2


@pytest.mark.parametrize(
    ("duration", "beat", "margin"),
    [
        pytest.param(10.0, 1.0, 1.0, id="default"),
        pytest.param(3.0, 0.3, 0.5, id="short"),
        pytest.param(0.5, 0.1, 0.5, id="very-short"),
        pytest.param(60.0, 1.0, 6.0, id="long"),
    ],
)
def test_derived_intervals(duration: float, beat: float, margin: float) -> None:
    settings = Settings(worker_id="w", lease_duration_s=duration)
    assert settings.beat_interval_s == pytest.approx(beat)
    assert settings.fence_margin_s == pytest.approx(margin)


# --- flags ----------------------------------------------------------------------------------


def parser_for(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telemax-consumer")
    add_options(parser, command)
    return parser


@pytest.mark.parametrize("command", COMMANDS)
def test_add_options_adds_exactly_the_applicable_flags(command: str) -> None:
    actions = {
        a.dest: a for a in parser_for(command)._actions if a.option_strings != ["-h", "--help"]
    }
    applicable = [o for o in OPTIONS if command in o.commands]
    assert set(actions) == {o.field for o in applicable}
    for option in applicable:
        action = actions[option.field]
        assert action.option_strings == [option.flag]
        assert action.default is None
        assert action.help is not None
        assert f"env {option.env}" in action.help
        if option.default is None:  # derived: the help says how
            assert action.help.endswith(f"[env {option.env}]")
        else:
            assert action.help.endswith(f", default {option.default or '(empty)'}]")


@pytest.mark.parametrize(
    ("env", "flag"),
    [
        ("TELEMAX_STREAM", "--stream"),
        ("TELEMAX_LEASE_DURATION_S", "--lease-duration-s"),
        ("TELEMAX_DLQ_TABLE", "--dlq-table"),
        ("TELEMAX_METRICS_PORT", "--metrics-port"),
    ],
)
def test_flag_names_follow_env_names(env: str, flag: str) -> None:
    (option,) = [o for o in OPTIONS if o.env == env]
    assert option.flag == flag


def test_help_text_mentions_every_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    text = " ".join(parser_for("run").format_help().split())
    for option in OPTIONS:
        if "run" in option.commands:
            assert option.env in text
    assert "TELEMAX_SHARDS" not in text


def test_parsed_flags_feed_load() -> None:
    args = parser_for("run").parse_args(["--lease-duration-s", "6", "--stream", "flagged"])
    settings = load("run", vars(args), {"TELEMAX_STREAM": "env", "TELEMAX_METRICS_PORT": "9"})
    assert (settings.lease_duration_s, settings.stream, settings.metrics_port) == (
        6.0,
        "flagged",
        9,
    )


def test_every_option_has_a_settings_field_with_matching_default() -> None:
    fields = Settings.__dataclass_fields__
    for option in OPTIONS:
        assert option.field in fields
        if option.default is not None:
            assert getattr(Settings(worker_id="w"), option.field) == option.parse(option.default)


@pytest.mark.parametrize(
    ("feed", "table", "dlq", "leases", "handler"),
    [
        (
            "telemax",
            "TELEMAX",
            "TELEMAX-deadletter",
            "telemax-leases",
            "consumer.feeds.telemax:to_item",
        ),
        (
            "taxi",
            "taxi-trips",
            "taxi-trips-deadletter",
            "taxi-leases",
            "consumer.feeds.taxi:to_item",
        ),
        ("orders", "orders", "orders-deadletter", "orders-leases", "consumer.feeds.orders:to_item"),
    ],
)
def test_the_feed_gives_the_default_tables_and_handler(
    feed: str, table: str, dlq: str, leases: str, handler: str
) -> None:
    settings = load("run", env={"TELEMAX_FEED": feed})
    assert (settings.feed, settings.table, settings.dlq_table) == (feed, table, dlq)
    assert (settings.lease_table, settings.handler) == (leases, handler)
    assert settings.member_table_name == f"{leases}-members"


def test_table_variables_and_the_handler_still_override_the_feed() -> None:
    settings = load(
        "run",
        {"dlq_table": "flag-dlq"},
        {
            "TELEMAX_FEED": "orders",
            "TELEMAX_TABLE": "shop",
            "TELEMAX_LEASE_TABLE": "shop-leases",
            "TELEMAX_DLQ_TABLE": "env-dlq",
            "TELEMAX_HANDLER": "tests.handlers:as_order",
        },
    )
    assert (settings.table, settings.lease_table, settings.dlq_table) == (
        "shop",
        "shop-leases",
        "flag-dlq",
    )
    assert settings.handler == "tests.handlers:as_order"


def test_an_unknown_feed_stops_start_up_with_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load("run", env={"TELEMAX_FEED": "parcels"})
    assert str(caught.value) == (
        "TELEMAX_FEED='parcels' is invalid: must be one of telemax, taxi, orders, "
        "or package.module:object"
    )


@pytest.mark.parametrize(
    ("raw", "expected"), [("telemax/", "telemax/"), ("shop", "shop/"), ("/a/b", "a/b/"), ("", "")]
)
def test_the_archive_prefix_is_a_folder(raw: str, expected: str) -> None:
    assert load("run", env={"TELEMAX_ARCHIVE_PREFIX": raw}).archive_prefix == expected


def test_alerts_and_archive_open_the_clients_they_need() -> None:
    assert load("run", env={}).services == ()
    both = {"TELEMAX_ALERT_TOPIC_ARN": "arn:aws:sns:r:1:t", "TELEMAX_ARCHIVE_BUCKET": "b"}
    assert load("run", env=both).services == ("sns", "s3")
