"""Set up for every test: servers built in tests do not listen on the fixed OTLP/gRPC port.

``COSTSPAN_GRPC_PORT=0`` is set when this file is imported, before any fixture of any scope (a
module-scoped server is built before function-scoped fixtures run), and ``costspan serve``
subprocesses inherit it: test servers, and suites run side by side, never contend for 4317. A test
that wants gRPC asks for a port itself.
"""

from __future__ import annotations

import os

os.environ["COSTSPAN_GRPC_PORT"] = "0"
