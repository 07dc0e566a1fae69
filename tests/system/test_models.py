"""Driven by the registry: adding a variant or an implementation adds it to every test here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_our_triton_kernels_compile_for_a_hopper_gpu():
    """Triton's interpreter (the CPU tests above) runs code its GPU compiler refuses: every kernel of ours, with the
    launch shapes vitbench uses, compiled for sm_90 here, no GPU needed (tests/compile_for_hopper.py, in a process
    without the interpreter)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("compile_for_hopper.py")
    res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("compiled") == 8, res.stdout

