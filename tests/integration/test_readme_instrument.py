"""The README's "Instrument an app" environment, as printed there, leaves an app quiet and fast.

A tiny app makes one openai SDK call under ``opentelemetry-instrument`` (the OpenTelemetry distro)
with exactly the README's ``export`` lines (the key and address filled in) against a real
``costspan serve``; once its work is done it exits in under 5 s (the exporters' shutdown: with metrics
or logs pushed to a server that answers 404, their retries took about 10 s), and its call reaches the
server. Start-up (imports) is timed separately and loosely: it depends on the machine's load.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.processor.test_cli_conventions import costspan, serving
from tests.support.fake_provider import FakeProvider

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

APP = textwrap.dedent(
    """
    import os
    import time
    import openai

    with openai.OpenAI(base_url=os.environ["FAKE_URL"] + "/v1", api_key="k", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    print(time.time())  # the app's work is done: from here on, only the exit
    """
)


def readme_environment() -> dict[str, str]:
    """The ``export`` lines of the README's "Instrument an app" shell block, as the shell would set them."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Instrument an app", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    env: dict[str, str] = {}
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            env |= dict(word.split("=", 1) for word in words[1:])
    return env


@pytest.mark.slow
def test_an_app_with_the_readme_environment_exits_fast(tmp_path: Path) -> None:
    readme = readme_environment()
    assert readme["OTEL_METRICS_EXPORTER"] == readme["OTEL_LOGS_EXPORTER"] == "none"
    data = {"COSTSPAN_DATA_DIR": str(tmp_path / "data")}
    admin = costspan("keys", "create", "--role", "admin", env=data).stdout.strip()
    ingest = costspan("keys", "create", "--role", "ingest", env=data).stdout.strip()
    (tmp_path / "app.py").write_text(APP)
    with FakeProvider() as fake, serving(env=data) as (url, _):
        env = {
            k.replace("<an ingest key>", ingest): v.replace("<an ingest key>", ingest).replace(
                "http://127.0.0.1:4318", url
            )
            for k, v in readme.items()
        }
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COSTSPAN_"))}
        started = time.time()
        app = subprocess.run(
            [str(BIN / "opentelemetry-instrument"), str(BIN / "python"), "app.py"],
            cwd=tmp_path,
            env={**clean, **env, "FAKE_URL": fake.url(), "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        ended = time.time()
        assert app.returncode == 0, app.stderr[-3000:]
        exiting = ended - float(app.stdout.split()[-1])
        assert exiting < 5, f"the app took {exiting:.1f} s to exit after its work: {app.stderr[-2000:]}"
        assert ended - started < 30
        assert "404" not in app.stderr and "Failed to export" not in app.stderr, app.stderr[-2000:]
        # its call reached the server, priced, under the README's service name
        metrics = httpx.get(url + "/metrics", headers={"X-API-Key": admin}).text
        line = re.search(r'^costspan_requests_total\{[^}]*service="checkout"[^}]*\} (\S+)$', metrics, re.M)
        assert line is not None and float(line.group(1)) == 1, metrics[-3000:]
