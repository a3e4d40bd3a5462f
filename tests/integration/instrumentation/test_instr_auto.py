"""`opentelemetry-instrument python app.py` loads costspan by its entry point; spans reach an OTLP receiver."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from costspan.instrumentation import attributes as attr
from tests.support.fake_provider import FakeProvider, FakeUsage
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

APP = textwrap.dedent(
    """
    import os
    import anthropic, httpx, openai
    from costspan.instrumentation import attribute

    base = os.environ["FAKE_URL"]
    with attribute(tenant="acme", workflow="nightly"):
        with openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0) as oc:
            oc.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            list(oc.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
        with anthropic.Anthropic(base_url=base, api_key="k", max_retries=0) as ac:
            ac.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
        with httpx.Client() as hc:
            hc.post(base + "/v1beta/models/gemini-2.5-flash:generateContent", json={"contents": []})
    """
)

# No opentelemetry-distro in the dev set: register the SDK's own configurator the way a distro does,
# through an entry point in a throwaway dist-info on PYTHONPATH.
ENTRY_POINTS = "[opentelemetry_configurator]\ncostspan_test = opentelemetry.sdk._configuration:_OTelSDKConfigurator\n"


def run_app(tmp_path: Path, fake: FakeProvider, receiver: OtlpReceiver, **env_extra: str) -> None:
    (tmp_path / "app.py").write_text(APP)
    dist = tmp_path / "site" / "costspan_test_configurator-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: costspan-test-configurator\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT / "instrumentation"), str(ROOT / "pricing")]),
        "FAKE_URL": fake.url(),
        "OTEL_PYTHON_CONFIGURATOR": "costspan_test",
        "OTEL_SERVICE_NAME": "billing-worker",
        "OTEL_TRACES_EXPORTER": "otlp_proto_http",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint + "/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken"),
        **env_extra,
    }
    proc = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), str(tmp_path / "app.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def calls(receiver: OtlpReceiver) -> list[ReceivedSpan]:
    return [s for s in receiver.spans if attr.GEN_AI_OPERATION_NAME in s.attributes]


@pytest.mark.slow
def test_spans_arrive_priced_through_opentelemetry_instrument(tmp_path: Path) -> None:
    with FakeProvider(FakeUsage(input=1000, output=200)) as fake, OtlpReceiver() as receiver:
        run_app(tmp_path, fake, receiver)
    spans = calls(receiver)
    # 2 openai calls (genai-openai's spans, enriched), 1 anthropic (the SDK's span, enriched), 1 gemini (ours).
    assert sorted(s.name for s in spans) == [
        "anthropic.messages.create",
        "chat gpt-4o",
        "chat gpt-4o",
        "generate_content gemini-2.5-flash",
    ]
    for span in spans:
        a = span.attributes
        assert span.resource["service.name"] == "billing-worker"
        assert a[attr.TENANT_ID] == "acme" and a[attr.WORKFLOW_ID] == "nightly"
        assert a[attr.COST_STATUS] == attr.STATUS_PRICED
        assert a[attr.COST_USD] > 0 and a[attr.GEN_AI_USAGE_COST] == a[attr.COST_USD]
        assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 200
        assert (a.get(attr.ENRICHED) is True) != (attr.RECORD_SOURCE in a)  # exactly one kind of record
    (gemini,) = [s for s in spans if s.name.startswith("generate_content")]
    assert gemini.scope == "costspan.instrumentation"
    assert gemini.attributes[attr.RECORD_SOURCE] == attr.RECORD_SOURCE_HTTPX


@pytest.mark.slow
def test_disabled_by_environment(tmp_path: Path) -> None:
    with FakeProvider() as fake, OtlpReceiver() as receiver:
        run_app(tmp_path, fake, receiver, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="costspan")
    spans = calls(receiver)
    assert spans  # the peers' spans still arrive ...
    assert not any(k.startswith("costspan.") for s in spans for k in s.attributes)  # ... without costspan
