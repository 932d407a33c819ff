"""Run one measurement in a fresh Python process (nothing warm in memory, its own peak RSS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence


def run_child(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> dict:
    """Run ``cmd``; its last line on stdout is a JSON object, returned with ``wall_s`` added.

    A failing child ends the benchmark with the tail of its stderr. TensorFlow's C++ logging is silenced
    unless ``env`` says otherwise.
    """
    start = time.perf_counter()
    proc = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        check=False,
    )
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[1:3])} failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - start
    return out
