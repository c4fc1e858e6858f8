"""The runtime installed as users install it, for cold-start measurements."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def runtime_environment(tmp: Path) -> Path:
    """A fresh venv with vae-edge installed as users install it (`pip install .`: the
    runtime alone, no torch, bytecode compiled at install); returns its `vae-edge`."""
    venv = tmp / "runtime-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO)]
    subprocess.run(pip, check=True, capture_output=True)
    return venv / "bin" / "vae-edge"
