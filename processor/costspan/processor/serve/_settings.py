"""Settings of `costspan serve`: flags > ``COSTSPAN_*`` environment > config file (TOML or JSON) > defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from costspan.processor.store._store import StoreConfig
from costspan.processor.store._validate import MAX_ID_LENGTH, TENANT_PATTERN, CardinalityLimits

__all__ = ["Settings", "load_settings"]

_BOUNDS = CardinalityLimits()


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

    @field_validator("forward_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL such as http://collector:4318/v1/traces")
        return value or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

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
