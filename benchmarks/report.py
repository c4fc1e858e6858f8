"""Where benchmark scripts put what they measured: results/NAME.json and results/NAME.md."""

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, data: dict, header: str, table: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(f"{header}\n\n{table}\n")
    print(header)
    print(table)
