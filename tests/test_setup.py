"""Building: where torch cannot be imported (pip's default isolated build), setup.py stops with one line
that says what to do, instead of a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_without_torch_says_what_to_do_in_one_line():
    code = ("import sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--name']\n"
            "exec(compile(open('setup.py').read(), 'setup.py', 'exec'))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--no-build-isolation" in lines[0] and "torch" in lines[0]
