"""Real `sidecar` subprocesses in tests."""

from __future__ import annotations

import subprocess


def reap(process: subprocess.Popen[str]) -> None:
    """However the test ended: the process is gone (killed if it still runs) and its pipe closed."""
    if process.poll() is None:
        process.kill()
        process.wait()
    if process.stderr is not None:
        process.stderr.close()
