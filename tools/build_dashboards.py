"""Generate the Grafana dashboards in dashboards/ (importable JSON with a Prometheus data-source variable).

Run: ``.venv/bin/python -m tools.build_dashboards``. The JSON is committed; this script keeps the four
dashboards consistent (same variables, units and layout) instead of hand-editing thousands of lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
COST = "costspan_cost_usd_total"


def _datasource_var() -> dict[str, Any]:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "current": {}}


def _label_var(name: str, metric: str, *, multi: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "label": name.capitalize(),
        "type": "query",
        "datasource": DS,
        "query": {"query": f"label_values({metric}, {name})", "refId": f"{name}-values"},
        "definition": f"label_values({metric}, {name})",
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        "allValue": ".*",
        "current": {},
    }


class Board:
    def __init__(self, uid: str, title: str, description: str, variables: list[dict[str, Any]]) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.variables = [_datasource_var(), *variables]
        self.panels: list[dict[str, Any]] = []
        self._x = self._y = 0

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self._x + w > 24:
            self._x, self._y = 0, self._y + h
        pos = {"x": self._x, "y": self._y, "w": w, "h": h}
        self._x += w
        return pos

    def panel(
        self,
        title: str,
        kind: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        w: int = 12,
        h: int = 8,
        description: str = "",
    ) -> None:
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "title": title,
                "description": description,
                "type": kind,
                "datasource": DS,
                "gridPos": self._place(w, h),
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"showLegend": True}} if kind == "timeseries" else {},
                "targets": [
                    {"refId": chr(65 + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["costspan", "llm", "cost"],
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "editable": True,
            "refresh": "30s",
            "time": {"from": "now-24h", "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": []},
            "panels": self.panels,
        }


def overview() -> Board:
    b = Board(
        "costspan-overview",
        "costspan: cost overview",
        "What LLM calls cost, by tenant, service, provider and model.",
        [],
    )
    b.panel("Spend rate", "stat", [(f"sum(rate({COST}[5m])) * 3600", "USD/hour")], unit="currencyUSD", w=6, h=4)
    b.panel("Spent, last 24 hours", "stat", [(f"sum(increase({COST}[1d]))", "USD")], unit="currencyUSD", w=6, h=4)
    b.panel("Spent, last 30 days", "stat", [(f"sum(increase({COST}[30d]))", "USD")], unit="currencyUSD", w=6, h=4)
    b.panel(
        "Unpriced calls, last 24 hours",
        "stat",
        [("sum(increase(costspan_unpriced_requests_total[1d]))", "calls")],
        w=6,
        h=4,
        description="Calls to models with no known price: add them to a user catalog file.",
    )
    b.panel(
        "Spend rate by tenant",
        "timeseries",
        [("sum by (tenant) (costspan:cost_usd:rate5m) * 3600", "{{tenant}}")],
        unit="currencyUSD",
    )
    b.panel(
        "Spend rate by model",
        "timeseries",
        [("sum by (provider, model) (costspan:cost_usd:rate5m) * 3600", "{{provider}}/{{model}}")],
        unit="currencyUSD",
    )
    for dim in ("tenant", "service", "provider", "model"):
        b.panel(
            f"Spend by {dim} (selected range)",
            "bargauge",
            [(f"sort_desc(sum by ({dim}) (increase({COST}[$__range])))", f"{{{{{dim}}}}}")],
            unit="currencyUSD",
            w=6,
        )
    return b


def tenant() -> Board:
    sel = 'tenant=~"$tenant"'
    b = Board(
        "costspan-tenant",
        "costspan: tenant drill-down",
        "One tenant's spend by service, model and token type.",
        [_label_var("tenant", COST)],
    )
    b.panel(
        "Spent (selected range)",
        "stat",
        [(f"sum(increase({COST}{{{sel}}}[$__range]))", "USD")],
        unit="currencyUSD",
        w=8,
        h=4,
    )
    b.panel(
        "Calls (selected range)",
        "stat",
        [(f"sum(increase(costspan_requests_total{{{sel}}}[$__range]))", "calls")],
        w=8,
        h=4,
    )
    b.panel(
        "Error ratio (selected range)",
        "stat",
        [
            (
                f'sum(increase(costspan_requests_total{{{sel},status="error"}}[$__range]))'
                f" / sum(increase(costspan_requests_total{{{sel}}}[$__range]))",
                "errors",
            )
        ],
        unit="percentunit",
        w=8,
        h=4,
    )
    b.panel(
        "Spend rate by service",
        "timeseries",
        [(f"sum by (service) (rate({COST}{{{sel}}}[5m])) * 3600", "{{service}}")],
        unit="currencyUSD",
    )
    b.panel(
        "Spend rate by model",
        "timeseries",
        [(f"sum by (model) (rate({COST}{{{sel}}}[5m])) * 3600", "{{model}}")],
        unit="currencyUSD",
    )
    b.panel(
        "Tokens by type",
        "timeseries",
        [(f"sum by (token_type) (rate(costspan_tokens_total{{{sel}}}[5m]))", "{{token_type}}")],
        unit="short",
    )
    b.panel(
        "Calls by status",
        "timeseries",
        [(f"sum by (status) (rate(costspan_requests_total{{{sel}}}[5m]))", "{{status}}")],
        unit="reqps",
    )
    return b


def budgets() -> Board:
    b = Board("costspan-budgets", "costspan: budget health", "Budget utilization, alerts fired and calls blocked.", [])
    b.panel(
        "Utilization by budget",
        "bargauge",
        [("sort_desc(costspan_budget_utilization_ratio)", "{{budget}}")],
        unit="percentunit",
        w=12,
    )
    b.panel(
        "Spent vs limit",
        "timeseries",
        [("costspan_budget_spent_usd", "{{budget}} spent"), ("costspan_budget_limit_usd", "{{budget}} limit")],
        unit="currencyUSD",
        w=12,
    )
    b.panel(
        "Alerts fired (selected range)",
        "timeseries",
        [("sum by (budget, threshold) (increase(costspan_budget_alerts_total[$__range]))", "{{budget}} {{threshold}}")],
        w=12,
    )
    b.panel(
        "Calls blocked (selected range)",
        "timeseries",
        [("sum by (budget) (increase(costspan_budget_blocked_total[$__range]))", "{{budget}}")],
        w=12,
    )
    return b


def performance() -> Board:
    dur = "costspan_request_duration_seconds_bucket"
    b = Board(
        "costspan-performance",
        "costspan: LLM call performance",
        "Latency, errors, throughput and time to first chunk.",
        [],
    )
    b.panel(
        "Latency p50 / p95 / p99",
        "timeseries",
        [(f"histogram_quantile({q}, sum by (le) (rate({dur}[5m])))", f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
        unit="s",
    )
    b.panel(
        "Latency p95 by model",
        "timeseries",
        [("costspan:request_duration_seconds:p95_5m", "{{provider}}/{{model}}")],
        unit="s",
    )
    b.panel(
        "Error ratio by provider", "timeseries", [("costspan:error_ratio:rate5m", "{{provider}}")], unit="percentunit"
    )
    b.panel(
        "Output tokens per second",
        "timeseries",
        [('sum by (provider) (rate(costspan_tokens_total{token_type="output"}[5m]))', "{{provider}}")],
        unit="short",
    )
    b.panel(
        "Time to first chunk p50 / p95 (streams)",
        "timeseries",
        [
            (
                f"histogram_quantile({q}, sum by (le) (rate(costspan_time_to_first_chunk_seconds_bucket[5m])))",
                f"p{int(q * 100)}",
            )
            for q in (0.5, 0.95)
        ],
        unit="s",
    )
    b.panel(
        "GenAI operation duration p95 (semconv)",
        "timeseries",
        [
            (
                "histogram_quantile(0.95, sum by (le, gen_ai_provider_name) "
                "(rate(gen_ai_client_operation_duration_seconds_bucket[5m])))",
                "{{gen_ai_provider_name}}",
            )
        ],
        unit="s",
    )
    return b


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for board in (overview(), tenant(), budgets(), performance()):
        path = OUT / f"{board.uid}.json"
        path.write_text(json.dumps(board.to_json(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {path.name}: {len(board.panels)} panels")


if __name__ == "__main__":
    main()
