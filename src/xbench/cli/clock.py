"""When this `xbench` command started, taken as the CLI package is first imported (before typer, rich and the
libraries a command loads), so the durations a command reports include its imports."""

from __future__ import annotations

import time

COMMAND_STARTED = time.time()
