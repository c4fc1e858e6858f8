"""Training time of the models a stream needs, through the CLI as a user runs it
(`vae-edge train`, start-up included), on a quiet machine:

- one NAB series' first 750 readings, one channel (nyc_taxi, `--window auto`);
- SKAB's first run, its first 400 rows x 8 sensors (`--window auto`);
- two such trainings of the NAB series at once on the machine's cores: with the default
  threads (one each) and with `--threads` = every core each (what torch does unasked).

Writes benchmarks/results/train-speed.{json,md}.

    python benchmarks/train_speed.py
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from report import write_results  # noqa: E402

CLI = [sys.executable, "-m", "vae_edge.cli"]


def data() -> Path:
    return Path(os.environ.get("VAE_EDGE_DATA", REPO.parent / "shared" / "data"))


def train_commands(csv: Path, out: Path, threads: int | None = None) -> list[str]:
    extra = ["--threads", str(threads)] if threads else []
    return [*CLI, "train", str(csv), "--window", "auto", "--out", str(out), "-q", *extra]


def timed(*commands: list[str]) -> float:
    """Wall seconds for the commands run at once, each to its end."""
    t0 = time.perf_counter()
    running = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for c in commands]  # fmt: skip
    for p in running:
        _, err = p.communicate()
        if p.returncode:
            sys.exit(f"training failed: {err.decode()[-2000:]}")
    return time.perf_counter() - t0


def environment() -> str:
    from importlib import metadata

    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("vae-edge", "torch", "numpy"))
    return (f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; Python "
            f"{platform.python_version()}; {versions}")  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nab = (data() / "nab" / "realKnownCause__nyc_taxi.csv").read_text().splitlines()
        (work / "nab.csv").write_text("\n".join(nab[:751]) + "\n")
        skab = (data() / "skab" / "other" / "1.csv").read_text().splitlines()
        cells = [line.split(";") for line in skab[:401]]
        # the 8 sensors (no timestamp, no labels), as benchmarks/multivariate.py reads them
        (work / "skab.csv").write_text("\n".join(";".join(c[1:9]) for c in cells) + "\n")
        cores = os.cpu_count() or 1
        results = {
            "nab_750x1_seconds": timed(train_commands(work / "nab.csv", work / "a")),
            "skab_400x8_seconds": timed(train_commands(work / "skab.csv", work / "b")),
            "two_at_once_one_thread_each_seconds": timed(
                train_commands(work / "nab.csv", work / "c"),
                train_commands(work / "nab.csv", work / "d")),
            f"two_at_once_{cores}_threads_each_seconds": timed(
                train_commands(work / "nab.csv", work / "e", cores),
                train_commands(work / "nab.csv", work / "f", cores)),
        }  # fmt: skip
    results = {k: round(v, 1) for k, v in results.items()}
    table = "| training (`vae-edge train`, start-up included) | wall s |\n| --- | --- |\n"
    table += "".join(f"| {k.replace('_seconds', '').replace('_', ' ')} | {v} |\n"
                     for k, v in results.items())  # fmt: skip
    write_results("train-speed", results, "# Training time of a stream's models\n\n"
                  f"{environment()}. Written by benchmarks/train_speed.py.", table)  # fmt: skip
    print(table)


if __name__ == "__main__":
    main()
