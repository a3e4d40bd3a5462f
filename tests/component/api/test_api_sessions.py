"""``GET /v1/sessions/{session_id}``: one session's totals, behind the tenant wall."""

from __future__ import annotations

import pytest

from costspan.pricing import Pricer
from tests.component.api.conftest import Api
from tests.component.api.seed import acme_today, acme_two_days_ago, ingest, money, two_days_ago_noon


@pytest.fixture
def seeded(api: Api) -> Api:
    ingest(api)
    return api


def test_a_session_by_id(seeded: Api, pricer: Pricer) -> None:
    r = seeded.get("acme", "/v1/sessions/acme-session-1")
    assert r.status_code == 200, r.text
    body = r.json()
    (row,) = body["tenants"]
    assert (body["session_id"], body["days"], body["currency"], row["tenant_id"]) == (
        "acme-session-1",
        30,
        "USD",
        "acme",
    )
    assert (row["request_count"], row["input_tokens"], row["output_tokens"]) == (2, 2000, 400)
    assert row["cost"] == body["total"]["cost"] == money(acme_today(pricer))
    older = seeded.get("admin", "/v1/sessions/acme-session-2").json()  # an admin key: every tenant's
    assert older["tenants"][0]["first_day"] == two_days_ago_noon().date().isoformat()
    assert older["total"]["cost"] == money(acme_two_days_ago(pricer)) and older["total"]["error_count"] == 1


@pytest.mark.parametrize(
    ("who", "path", "params", "status"),
    [
        ("globex", "/v1/sessions/acme-session-1", {}, 404),  # another tenant's session: not found
        ("acme", "/v1/sessions/acme-session-1", {"tenant": "globex"}, 403),
        ("acme", "/v1/sessions/no-such-session", {}, 404),
        ("acme", "/v1/sessions/acme-session-2", {"days": 1}, 404),  # two days ago: outside the window
        ("acme", "/v1/sessions/acme-session-1", {"days": 0}, 422),
        (None, "/v1/sessions/acme-session-1", {}, 401),
    ],
)
def test_session_lookup_refusals(
    seeded: Api, who: str | None, path: str, params: dict[str, int | str], status: int
) -> None:
    r = seeded.get(who, path, **params)
    assert r.status_code == status, r.text
    assert "acme-user" not in r.text and "0." not in r.text
