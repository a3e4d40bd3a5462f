"""Budget definitions: valid ones become frozen values, bad ones fail with a message naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from costspan.processor import budgets
from costspan.processor.budgets import (
    Budget,
    BudgetEnvError,
    InvalidBudgetError,
    Mode,
    Period,
    Unit,
    budgets_from_env,
    parse_budget,
    window,
)
from costspan.processor.budgets._status import health


def test_public_surface_is_all() -> None:
    public = {n for n in dir(budgets) if not n.startswith("_")}
    assert set(budgets.__all__) == public
    for name in budgets.__all__:
        assert getattr(budgets, name) is not None


def test_a_full_budget_parses_into_a_frozen_value() -> None:
    b = parse_budget(
        {
            "id": "acme-day",
            "scope": {"tenant": "acme", "model": "gpt-4o"},
            "period": "day",
            "limit": "12.50",
            "unit": "usd",
            "mode": "adaptive",
            "fallback_models": ["gpt-4o-mini"],
            "max_tokens_cap": 512,
            "thresholds": [90, 50, 50],
            "timezone": "Europe/Berlin",
        }
    )
    assert b == Budget(
        id="acme-day",
        period=Period.DAY,
        limit=Decimal("12.50"),
        scope=(("model", "gpt-4o"), ("tenant", "acme")),
        unit=Unit.USD,
        mode=Mode.ADAPTIVE,
        fallback_models=("gpt-4o-mini",),
        max_tokens_cap=512,
        thresholds=(50, 90),
        timezone="Europe/Berlin",
    )
    with pytest.raises(AttributeError):
        b.limit = Decimal(1)  # type: ignore[misc]


def test_defaults() -> None:
    b = parse_budget({"period": "month", "limit": 5})
    assert (b.scope, b.unit, b.mode, b.thresholds, b.timezone) == ((), Unit.USD, Mode.HARD, (50, 75, 90, 100), "UTC")
    assert b.id.startswith("b-")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"period": "day", "limit": "-1"}, "limit: Input should be greater than or equal to 0"),
        ({"period": "fortnight", "limit": "1"}, "period: Input should be 'per_request', 'hour', 'day', 'week'"),
        ({"period": "day", "limit": "NaN"}, "limit:"),
        ({"period": "day", "limit": "1", "mode": "adaptive"}, "adaptive budget needs at least one model"),
        (
            {"period": "day", "limit": "1", "mode": "adaptive", "fallback_models": []},
            "adaptive budget needs at least one model",
        ),
        ({"period": "day", "limit": "1", "timezone": "Mars/Olympus"}, "unknown IANA time zone 'Mars/Olympus'"),
        ({"period": "day", "limit": "1", "scope": {"planet": "x"}}, "scope.planet"),
        ({"period": "day", "limit": "1", "scope": {"tenant": " "}}, "scope tenant must not be empty"),
        ({"period": "day", "limit": "1", "thresholds": [0, 50]}, "thresholds are percentages between 1 and 1000"),
        ({"period": "day", "limit": "1", "unit": "eur"}, "unit: Input should be 'usd', 'tokens' or 'requests'"),
        ({"period": "day", "limit": "1", "mode": "panic"}, "mode: Input should be 'hard', 'soft' or 'adaptive'"),
        ({"period": "day", "limit": "1", "max_tokens_cap": 0}, "max_tokens_cap: Input should be greater than 0"),
        ({"period": "day", "limit": "1", "id": "has space"}, "id: String should match pattern"),
        ({"period": "day", "limit": "1", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"limit": "1"}, "period: Field required"),
    ],
)
def test_bad_budgets_fail_with_a_clear_message(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidBudgetError) as info:
        parse_budget(spec)
    assert str(info.value).startswith("invalid budget: ")
    assert message in str(info.value)


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "now", "tz", "start", "end"),
    [
        (Period.DAY, _utc(2026, 3, 10, 15, 0), "UTC", _utc(2026, 3, 10), _utc(2026, 3, 11)),
        # 23:30 UTC is already the next day in Berlin (UTC+1 in March before DST)
        (Period.DAY, _utc(2026, 3, 10, 23, 30), "Europe/Berlin", _utc(2026, 3, 10, 23), _utc(2026, 3, 11, 23)),
        # DST starts 2026-03-29 in Berlin: that day has 23 hours
        (Period.DAY, _utc(2026, 3, 29, 12), "Europe/Berlin", _utc(2026, 3, 28, 23), _utc(2026, 3, 29, 22)),
        (Period.MONTH, _utc(2026, 2, 14), "UTC", _utc(2026, 2, 1), _utc(2026, 3, 1)),
        (Period.MONTH, _utc(2026, 12, 31, 23), "UTC", _utc(2026, 12, 1), _utc(2027, 1, 1)),
        (Period.MONTH, _utc(2026, 1, 31, 16), "Asia/Tokyo", _utc(2026, 1, 31, 15), _utc(2026, 2, 28, 15)),
        (Period.WEEK, _utc(2026, 3, 12, 9), "UTC", _utc(2026, 3, 9), _utc(2026, 3, 16)),  # Monday first
        (Period.YEAR, _utc(2026, 7, 4, 12), "UTC", _utc(2026, 1, 1), _utc(2027, 1, 1)),
        # 2026-12-31 16:00 UTC is already 2027 in Tokyo (UTC+9)
        (Period.YEAR, _utc(2026, 12, 31, 16), "Asia/Tokyo", _utc(2026, 12, 31, 15), _utc(2027, 12, 31, 15)),
        (Period.HOUR, _utc(2026, 3, 12, 9, 59, 59), "UTC", _utc(2026, 3, 12, 9), _utc(2026, 3, 12, 10)),
        (Period.HOUR, _utc(2026, 3, 12, 9, 10), "Asia/Kolkata", _utc(2026, 3, 12, 8, 30), _utc(2026, 3, 12, 9, 30)),
    ],
)
def test_calendar_windows(period: Period, now: float, tz: str, start: float, end: float) -> None:
    assert window(period, now, tz) == (start, end)


def test_total_and_per_request_never_reset() -> None:
    assert window(Period.TOTAL, 1e9) == (0.0, float("inf"))
    assert window(Period.PER_REQUEST, 1e9) == (0.0, float("inf"))


@pytest.mark.parametrize(
    ("mode", "ratio", "word"),
    [
        (Mode.HARD, "0", "healthy"),
        (Mode.HARD, "0.7499", "healthy"),
        (Mode.HARD, "0.75", "warning"),
        (Mode.HARD, "0.90", "warning"),
        (Mode.HARD, "0.9001", "critical"),
        (Mode.HARD, "1", "blocked"),
        (Mode.SOFT, "1.5", "critical"),
    ],
)
def test_health_words(mode: Mode, ratio: str, word: str) -> None:
    kw: dict[str, Any] = {"fallback_models": ("m",)} if mode is Mode.ADAPTIVE else {}
    b = Budget(id="b", period=Period.DAY, limit=Decimal(1), mode=mode, **kw)
    assert health(b, Decimal(ratio)) == word


def test_budgets_from_env(caplog: pytest.LogCaptureFixture) -> None:
    env = budgets_from_env(
        {
            "GLOBAL_DAILY_LIMIT": "100",
            "GLOBAL_MONTHLY_LIMIT": "",
            "TENANT_DAILY_LIMIT": "5.5",
            "ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook",
            "COST_TRACKING_ENABLED": "false",
        }
    )
    assert env.enabled is False
    assert env.webhook_url == "http://127.0.0.1:9/hook"
    assert [(b.id, b.scope, b.period, b.limit) for b in env.budgets] == [
        ("env-global-daily", (), Period.DAY, Decimal(100)),
        ("env-tenant-daily", (("tenant", "*"),), Period.DAY, Decimal("5.5")),
    ]
    assert budgets_from_env({}).enabled is True
    assert budgets_from_env({}).budgets == ()


_BUDGET_VARIABLES = (
    "GLOBAL_DAILY_LIMIT",
    "GLOBAL_MONTHLY_LIMIT",
    "TENANT_DAILY_LIMIT",
    "TENANT_MONTHLY_LIMIT",
    "COSTSPAN_BUDGET_TIMEZONE",
    "COST_TRACKING_ENABLED",
    "ALERT_WEBHOOK_URL",
    "COSTSPAN_SPIKE_DETECTION",
    "COSTSPAN_SPIKE_FACTOR",
    "COSTSPAN_SPIKE_BASELINE_HOURS",
    "COSTSPAN_SPIKE_MIN_USD",
)


def test_budgets_from_the_process_environment_by_exact_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in _BUDGET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLOBAL_DAILY_LIMIT", " 12 ")
    monkeypatch.setenv("tenant_daily_limit", "5")  # not the variable's name: ignored
    monkeypatch.setenv("COSTSPAN_BUDGET_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("COST_TRACKING_ENABLED", "perhaps")
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "  ")
    monkeypatch.setenv("COSTSPAN_SPIKE_DETECTION", "OFF")
    env = budgets_from_env()
    assert [(b.id, b.limit, b.timezone) for b in env.budgets] == [("env-global-daily", Decimal(12), "Europe/Berlin")]
    assert env.enabled is True  # a bad switch keeps its default, and says so
    assert "COST_TRACKING_ENABLED='perhaps'" in caplog.text
    assert env.webhook_url is None  # empty is unset
    assert env.spikes is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GLOBAL_DAILY_LIMIT", "abc"),
        ("GLOBAL_DAILY_LIMIT", "-1"),
        ("GLOBAL_MONTHLY_LIMIT", "1,000"),
        ("TENANT_DAILY_LIMIT", "NaN"),
        ("TENANT_DAILY_LIMIT", "Infinity"),
        ("TENANT_MONTHLY_LIMIT", "$50"),
    ],
)
def test_a_limit_that_is_not_an_amount_stops_start_up_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(BudgetEnvError) as caught:
        budgets_from_env({name: value, "GLOBAL_MONTHLY_LIMIT" if name != "GLOBAL_MONTHLY_LIMIT" else "X": "100"})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r} is not a limit: expected an amount in USD"), message
    assert "class" not in message and "decimal." not in message and "Conversion" not in message


def test_limits_in_any_decimal_spelling_and_a_bad_timezone_named() -> None:
    env = budgets_from_env({"GLOBAL_MONTHLY_LIMIT": "1E+2", "TENANT_DAILY_LIMIT": "0"})
    assert [(b.id, b.limit) for b in env.budgets] == [
        ("env-global-monthly", Decimal(100)),
        ("env-tenant-daily", Decimal(0)),
    ]
    with pytest.raises(BudgetEnvError, match="TENANT_DAILY_LIMIT='3' with COSTSPAN_BUDGET_TIMEZONE='Mars/Base'"):
        budgets_from_env({"TENANT_DAILY_LIMIT": "3", "COSTSPAN_BUDGET_TIMEZONE": "Mars/Base"})
    assert budgets_from_env({"COST_TRACKING_ENABLED": " Off "}).enabled is False


def test_apply_env_installs_budgets_switch_and_webhook() -> None:
    from costspan.processor.budgets import BudgetBook, Call, apply_env

    book = BudgetBook()
    env = budgets_from_env({"TENANT_DAILY_LIMIT": "0", "ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook"})
    notifier = apply_env(book, env, retries=0)
    assert notifier is not None and notifier in book.alert_sinks
    assert [b.id for b in book.budgets()] == ["env-tenant-daily"]
    assert [e["actor"] for e in book.audit_log()] == ["env"]
    assert not book.check(Call(tenant="acme", provider="openai", model="gpt-4o", max_tokens=1)).allowed
    notifier.shutdown()
    assert apply_env(BudgetBook(), budgets_from_env({"COST_TRACKING_ENABLED": "0"})) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [("0E-7", "0"), ("0.0125000", "0.0125"), ("100", "100"), ("1E+2", "100"), ("-0.000", "0"), ("12.50", "12.5")],
)
def test_money_is_plain_digits(value: str, text: str) -> None:
    from costspan.processor.budgets._model import money

    assert money(Decimal(value)) == text


def test_cost_spike_detection_is_on_by_default_and_set_from_env(caplog: pytest.LogCaptureFixture) -> None:
    from costspan.processor.budgets import BudgetBook, apply_env

    default = budgets_from_env({}).spikes
    assert default is not None
    assert (default.factor, default.baseline_hours, default.min_spend) == (Decimal(3), 24, Decimal(1))
    tuned = budgets_from_env(
        {"COSTSPAN_SPIKE_FACTOR": "5", "COSTSPAN_SPIKE_BASELINE_HOURS": "0", "COSTSPAN_SPIKE_MIN_USD": "0.25"}
    ).spikes
    assert tuned is not None
    # the bad baseline is refused with a message naming it; the good values still apply
    assert (tuned.factor, tuned.baseline_hours, tuned.min_spend) == (Decimal(5), 24, Decimal("0.25"))
    assert "COSTSPAN_SPIKE_BASELINE_HOURS" in caplog.text
    assert budgets_from_env({"COSTSPAN_SPIKE_DETECTION": "off"}).spikes is None
    book = BudgetBook()
    apply_env(book, budgets_from_env({"COSTSPAN_SPIKE_FACTOR": "4"}))
    assert book.spike_detector is not None and book.spike_detector.factor == Decimal(4)


@pytest.mark.parametrize(("raw", "hours"), [("5", 5), (" 7 ", 7), ("5.0", 24), ("five", 24), ("", 24)])
def test_spike_baseline_hours_is_a_whole_number_or_the_default(raw: str, hours: int) -> None:
    """A whole number as ``int()`` reads one; anything else (``5.0`` too) is refused for the default."""
    spikes = budgets_from_env({"COSTSPAN_SPIKE_BASELINE_HOURS": raw}).spikes
    assert spikes is not None and spikes.baseline_hours == hours
