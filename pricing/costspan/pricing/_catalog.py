"""Loading the packaged catalog and user catalog files, merged into one compiled ``Catalog``."""

from __future__ import annotations

import bisect
import difflib
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from costspan.pricing._compiled import PricedModel, Timeline, compile_model, utc_start
from costspan.pricing._errors import CatalogError
from costspan.pricing._jsonlines import line_of
from costspan.pricing._match import PROVIDER_ALIASES, Predicate, compile_clause, id_candidates
from costspan.pricing._schema import CatalogFile, Clause, ModelEntry, ProviderEntry, ResourcePrice

__all__ = ["USER_CATALOG_ENV", "Catalog", "load_catalog", "parse_catalog_text"]

#: Colon-separated paths of user catalog files loaded over the packaged one.
USER_CATALOG_ENV = "COSTSPAN_PRICING_FILE"


def parse_catalog_text(text: str, source: str) -> CatalogFile:
    """Validate one catalog file; errors name the file, line and field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(source, [f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]) from None
    try:
        return CatalogFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if isinstance(p, (str, int))]
            # pydantic appends the union member's type name to the path; keep the data path only.
            path = [p for p in loc if not ((isinstance(p, str) and p[:1].isupper()) or p in {"decimal"})]
            field = ".".join(str(p) for p in path) or "(top level)"
            problems.append(f"line {line_of(text, path)}: {field}: {err['msg']}")
        raise CatalogError(source, problems) from None


def _packaged_text() -> str:
    return resources.files("costspan.pricing").joinpath("data/catalog.json").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class _Provider:
    entry: ProviderEntry
    by_id: Mapping[str, PricedModel]
    matchers: tuple[tuple[Predicate, PricedModel], ...]
    model_match: Predicate | None


def _merge(base: CatalogFile, extra: CatalogFile) -> CatalogFile:
    providers = {p.id: p for p in base.providers}
    for p in extra.providers:
        old = providers.get(p.id)
        if old is None:
            providers[p.id] = p
            continue
        previous = {m.id: m for m in old.models}
        # A user entry that replaces a packaged model keeps the packaged match rule unless it gives one.
        added = [
            m.model_copy(update={"match": previous[m.id].match}) if m.match is None and m.id in previous else m
            for m in p.models
        ]
        update = {k: getattr(p, k) for k in p.model_fields_set if k not in {"id", "models"}}
        models = added + [m for m in old.models if m.id not in {a.id for a in added}]
        providers[p.id] = old.model_copy(update={**update, "models": models})
    currencies = {k: list(v) for k, v in base.currencies.items()}
    for code, rates in extra.currencies.items():
        currencies[code.upper()] = currencies.get(code.upper(), []) + list(rates)
    res = {r.id: r for r in base.resources} | {r.id: r for r in extra.resources}
    return base.model_copy(
        update={
            "providers": list(providers.values()),
            "currencies": currencies,
            "resources": list(res.values()),
            "notes": base.notes + extra.notes,
            "tenants": base.tenants | extra.tenants,
        }
    )


class Catalog:
    """The merged, compiled catalog. Immutable once built; ``load_catalog`` builds a new one."""

    def __init__(self, data: CatalogFile, version: str, sources: Sequence[str]) -> None:
        self.data = data
        self.version = version
        self.sources = tuple(sources)
        self._providers: dict[str, _Provider] = {}
        for p in data.providers:
            priced = [compile_model(p.id, m, p.tier_multipliers) for m in p.models]
            matchers = tuple(
                (compile_clause(m.match or Clause(equals=m.id)), pm) for m, pm in zip(p.models, priced, strict=True)
            )
            by_id = {pm.model.lower(): pm for pm in reversed(priced)}
            model_match = compile_clause(p.model_match) if p.model_match else None
            self._providers[p.id] = _Provider(p, by_id, matchers, model_match)
        self._aliases = dict(PROVIDER_ALIASES)
        for p in data.providers:
            self._aliases[p.id.lower()] = p.id
            for alias in p.aliases:
                self._aliases[alias.lower()] = p.id
        self._rates: dict[str, tuple[tuple[float, ...], tuple[Decimal, ...]]] = {"USD": ((-math.inf,), (Decimal(1),))}
        for code, rates in data.currencies.items():
            ordered = sorted(rates, key=lambda r: r.effective_from)
            self._rates[code.upper()] = (
                tuple(utc_start(r.effective_from) for r in ordered),
                tuple(r.per_usd for r in ordered),
            )
        self.resources: dict[str, ResourcePrice] = {r.id: r for r in data.resources}

    # --- providers and models ------------------------------------------------------------------
    @property
    def provider_ids(self) -> tuple[str, ...]:
        return tuple(self._providers)

    def provider(self, name: str | None) -> ProviderEntry | None:
        pid = self.provider_id(name)
        return self._providers[pid].entry if pid else None

    def provider_id(self, name: str | None) -> str | None:
        if not name:
            return None
        pid = self._aliases.get(name.strip().lower())
        return pid if pid in self._providers else None

    def models(self, provider: str | None = None) -> Iterable[tuple[str, ModelEntry]]:
        pid = self.provider_id(provider) if provider else None
        for p in self._providers.values():
            if pid is None or p.entry.id == pid:
                for m in p.entry.models:
                    yield p.entry.id, m

    def entry(self, provider: str, model: str) -> ModelEntry | None:
        p = self._providers.get(provider)
        return next((m for m in p.entry.models if m.id == model), None) if p else None

    def _match_in(self, pid: str, model: str, fallbacks: bool) -> PricedModel | None:
        p = self._providers.get(pid)
        if p is None:
            return None
        found = p.by_id.get(model)
        if found is None:
            found = next((pm for pred, pm in p.matchers if pred(model)), None)
        if found is None and fallbacks:
            for other in p.entry.fallback_providers:
                found = self._match_in(other, model, fallbacks=False)
                if found is not None:
                    break
        return found

    def resolve(self, model: str, provider: str | None = None) -> PricedModel | None:
        """Find the priced model for an id as a client spelled it (slow path; callers cache)."""
        text = model.strip().lower()
        if not text:
            return None
        pid = self.provider_id(provider)
        if pid is not None and self._providers[pid].entry.free:
            return _free_model(pid, text)
        for vendor, candidate in id_candidates(text):
            order: list[str] = []
            if pid is not None:
                order.append(pid)
            vendor_id = self.provider_id(vendor)
            if vendor_id is not None:
                order.append(vendor_id)
            if pid is None:
                order += [p.entry.id for p in self._providers.values() if p.model_match and p.model_match(candidate)]
            for name in order:
                found = self._match_in(name, candidate, fallbacks=True)
                if found is not None:
                    return found
            if (pid is None and provider is None) or (pid is None and vendor_id is None):
                for name in self._providers:
                    found = self._match_in(name, candidate, fallbacks=False)
                    if found is not None:
                        return found
        return None

    def suggestions(self, model: str, limit: int = 5) -> tuple[str, ...]:
        ids = sorted({m.id for _, m in self.models()})
        return tuple(difflib.get_close_matches(model.strip().lower(), ids, n=limit, cutoff=0.6))

    # --- money ---------------------------------------------------------------------------------
    @property
    def currencies(self) -> tuple[str, ...]:
        return tuple(self._rates)

    def rate(self, currency: str, at: float) -> Decimal | None:
        found = self._rates.get(currency.upper())
        if found is None:
            return None
        starts, values = found
        i = bisect.bisect_right(starts, at) - 1
        return values[max(i, 0)]


def _free_model(provider: str, model: str) -> PricedModel:
    from costspan.pricing._compiled import Period, Rates

    zero = Decimal(0)
    rates = Rates(zero, zero, zero, zero, zero, None, None, None, None, zero, zero, zero, special=False)
    period = Period(-math.inf, rates, (), f"{provider}: local model, free")
    timeline = Timeline((-math.inf,), (period,))
    return PricedModel(provider, model, timeline, {"standard": timeline, "batch": timeline}, free=True)


def load_catalog(paths: Sequence[str | os.PathLike[str]] | None = None, *, packaged: bool = True) -> Catalog:
    """Load the packaged catalog and the user files (``paths``, else ``$COSTSPAN_PRICING_FILE``)."""
    if paths is None:
        env = os.environ.get(USER_CATALOG_ENV, "")
        paths = [p for p in env.split(os.pathsep) if p]
    texts: list[tuple[str, str]] = []
    if packaged:
        texts.append(("packaged catalog", _packaged_text()))
    for path in paths:
        try:
            texts.append((str(path), Path(path).read_text(encoding="utf-8")))
        except OSError as exc:
            raise CatalogError(str(path), [f"cannot read: {exc.strerror}"]) from None
    if not texts:
        raise CatalogError("catalog", ["no catalog to load"])
    files = [parse_catalog_text(text, source) for source, text in texts]
    merged = files[0]
    for extra in files[1:]:
        merged = _merge(merged, extra)
    version = files[0].version or "unversioned"
    if len(texts) > 1:
        digest = hashlib.sha256("".join(t for _, t in texts[1:]).encode()).hexdigest()[:8]
        version = f"{version}+user.{digest}"
    return Catalog(merged, version, [s for s, _ in texts])
