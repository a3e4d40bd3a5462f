"""Settings of `costspan serve`: flags > ``COSTSPAN_*`` environment > config file (TOML or JSON) > defaults."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from costspan.processor.budgets._email import SmtpSettings
from costspan.processor.store._store import StoreConfig
from costspan.processor.store._validate import MAX_ID_LENGTH, TENANT_PATTERN, CardinalityLimits

__all__ = ["Settings", "load_settings"]

_BOUNDS = CardinalityLimits()
#: The address alert e-mails come from (a host name without dots, ``localhost``, is allowed).
SENDER_PATTERN = r"^[^@\s<>,;\"']{1,64}@[A-Za-z0-9.-]{1,253}$"


class Settings(BaseSettings):
    """Everything `costspan serve` can be told. A bad value stops start-up with the field's name."""

    model_config = SettingsConfigDict(env_prefix="COSTSPAN_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=4318, ge=0, le=65535)
    #: OTLP/gRPC (``TraceService/Export``) on ``host``; 0 turns it off.
    grpc_port: int = Field(default=4317, ge=0, le=65535)
    data_dir: Path = Path("./costspan-data")
    fsync: Literal["always", "never"] = "always"
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)  # every other route's body
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)  # request line and headers
    metrics_public: bool = False
    max_pending_records: int = Field(default=100_000, ge=1)
    retry_after_seconds: int = Field(default=1, ge=1)
    snapshot_interval_seconds: float = Field(default=30.0, gt=0)
    ledger_retention_days: int = Field(default=90, ge=1)
    rollup_retention_days: int = Field(default=400, ge=1)
    segment_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_series: int = Field(default=10_000, ge=1)
    ingest_workers: int = Field(default=0, ge=0, le=64)
    forward_endpoint: str | None = None  # e.g. http://collector:4318/v1/traces
    forward_queue: int = Field(default=1000, ge=1)
    default_tenant: str = Field(default="", max_length=MAX_ID_LENGTH, pattern=TENANT_PATTERN)
    #: Identifiers and span attribute values longer than this are truncated (a tenant id is refused),
    #: like the OpenTelemetry SDK's OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT.
    max_value_length: int = Field(default=MAX_ID_LENGTH, ge=16, le=65536)
    #: Distinct names per tenant the usage index keeps; calls of further names are summed as "(other)".
    max_models_per_tenant: int = Field(default=_BOUNDS.model, ge=1)
    max_users_per_tenant: int = Field(default=_BOUNDS.user, ge=1)
    max_workflows_per_tenant: int = Field(default=_BOUNDS.workflow, ge=1)
    max_sessions_per_tenant: int = Field(default=_BOUNDS.session, ge=1)
    max_projects_per_tenant: int = Field(default=_BOUNDS.project, ge=1)
    # bounded rollups (issue 16): per-minute detail only for the calls of the last this many hours
    minute_detail_hours: int = Field(default=48, ge=1)
    hour_detail_days: int = Field(default=7, ge=1)
    #: days older than this keep only their ``keep_sessions_per_day`` dearest sessions (and multi-day ones)
    session_detail_days: int = Field(default=2, ge=1)
    keep_sessions_per_day: int = Field(default=100, ge=1)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # cluster: the instances of one deployment (docs/scale-out.md); none set: a single node
    #: Base URLs of every instance, this one included (``COSTSPAN_PEERS``: comma-separated).
    peers: Annotated[tuple[str, ...], NoDecode] = ()
    #: One base URL a line (``#`` starts a comment); joined with ``peers``.
    peers_file: Path | None = None
    #: This instance's own base URL; must be one of the peers when peers are set.
    node_url: str | None = None
    #: API key (admin role) this instance presents to its peers.
    peer_key: str | None = Field(default=None, repr=False)
    peer_timeout_seconds: float = Field(default=2.0, gt=0, le=60)

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part for part in (p.strip() for p in value.split(",")) if part)
        return value

    @field_validator("peers")
    @classmethod
    def _peer_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from costspan.processor.cluster._peers import parse_peer_urls

        return parse_peer_urls(value)

    @field_validator("node_url")
    @classmethod
    def _node_url(cls, value: str | None) -> str | None:
        from costspan.processor.cluster._peers import parse_peer_urls

        return parse_peer_urls([value])[0] if value else None

    @model_validator(mode="after")
    def _node_among_peers(self) -> Settings:
        from costspan.processor.cluster._peers import all_peer_urls

        urls = all_peer_urls(self.peers, self.peers_file)
        if urls and self.node_url is None:
            raise ValueError("node_url is required when peers are set (this instance's own base URL)")
        if urls and self.node_url not in urls:
            raise ValueError(f"node_url {self.node_url} is not one of the peers {', '.join(urls)}")
        return self

    # end cluster
    # spend leases: every enforcing budget across peers (docs/scale-out.md "Budgets by lease")
    #: Share of what remains of a budget's period that one lease grants.
    lease_fraction: Decimal = Field(default=Decimal("0.1"), gt=0, le=1, allow_inf_nan=False)
    #: Smallest and largest lease, as shares of the budget's limit.
    lease_min_share: Decimal = Field(default=Decimal("0.01"), ge=0, le=1, allow_inf_nan=False)
    lease_max_share: Decimal = Field(default=Decimal("0.25"), gt=0, le=1, allow_inf_nan=False)
    #: How long a lease lives unless renewed (shards renew at half of it).
    lease_ttl_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: The budget's owner unreachable and the lease spent: refuse the call (closed) or allow it (open).
    lease_owner_down: Literal["closed", "open"] = "closed"

    @model_validator(mode="after")
    def _lease_shares(self) -> Settings:
        if self.lease_min_share > self.lease_max_share:
            raise ValueError("lease_min_share must not exceed lease_max_share")
        return self

    # end spend leases

    # e-mail alerts: a budget's alert_emails get its threshold alerts over SMTP (off without smtp_host)
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_tls: Literal["none", "starttls", "tls"] = "none"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = Field(default="costspan@localhost", max_length=254, pattern=SENDER_PATTERN)
    smtp_timeout: float = Field(default=10.0, gt=0, le=300)
    smtp_ca_file: Path | None = None  # trust this CA (a private one) instead of the system's

    # --- QLens compatibility (compatql) ---
    #: Off: calls are neither priced nor recorded and budgets do not enforce (QLens'
    #: ``COST_TRACKING_ENABLED=false``, which turns it off too). Exports are still answered.
    cost_tracking_enabled: bool = True

    # dedupe window and columnar history (docs/processor.md)
    #: Span ids are remembered for this many hours of arrival (an exporter's retries); 0: forever.
    dedupe_window_hours: int = Field(default=6, ge=0, le=24 * 31)
    #: Compact closed ledger segments to Parquet (a nice-19 child process) for exports and queries.
    history_parquet: bool = True
    #: A ledger segment also closes (and is compacted) after this many seconds: the JSON-lines tail an
    #: export reads stays about an hour of calls.
    segment_seconds: float = Field(default=3600.0, gt=0)

    @field_validator("forward_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL such as http://collector:4318/v1/traces")
        return value or None

    @model_validator(mode="after")
    def _smtp_login(self) -> Settings:
        if self.smtp_password is not None and not self.smtp_username:
            raise ValueError("smtp_password needs smtp_username")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def smtp(self) -> SmtpSettings | None:
        """The SMTP server alert e-mails go through (None: e-mail alerts are off)."""
        if not self.smtp_host:
            return None
        return SmtpSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            tls=self.smtp_tls,
            username=self.smtp_username or "",
            password=self.smtp_password.get_secret_value() if self.smtp_password else "",
            sender=self.smtp_from,
            timeout=self.smtp_timeout,
            ca_file=None if self.smtp_ca_file is None else str(self.smtp_ca_file),
        )

    def cardinality_limits(self) -> CardinalityLimits:
        return CardinalityLimits(
            model=self.max_models_per_tenant,
            user=self.max_users_per_tenant,
            workflow=self.max_workflows_per_tenant,
            session=self.max_sessions_per_tenant,
            project=self.max_projects_per_tenant,
        )

    def store_config(self) -> StoreConfig:
        return StoreConfig(
            data_dir=self.data_dir,
            fsync=self.fsync,
            max_pending_records=self.max_pending_records,
            snapshot_interval_s=self.snapshot_interval_seconds,
            segment_bytes=self.segment_bytes,
            ledger_retention_days=self.ledger_retention_days,
            rollup_retention_days=self.rollup_retention_days,
            max_series=self.max_series,
            dedupe_window_hours=self.dedupe_window_hours,
            history=self.history_parquet,
            segment_seconds=self.segment_seconds,
            minute_detail_hours=self.minute_detail_hours,
            hour_detail_days=self.hour_detail_days,
        )


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Settings from ``flags`` (None values ignored), the environment and ``config_file``.

    Raises ``pydantic.ValidationError`` for a bad value and ``FileNotFoundError`` for a missing file.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    if config_file is None:
        return Settings(**given)
    if not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")
    path = config_file

    class _WithFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            file_source: PydanticBaseSettingsSource
            if path.suffix == ".json":
                file_source = JsonConfigSettingsSource(settings_cls, json_file=path)
            else:
                file_source = TomlConfigSettingsSource(settings_cls, toml_file=path)
            return (init_settings, env_settings, file_source)

    return _WithFile(**given)
