"""NAB's standard-profile score of many candidate detectors at once, by NAB's own Sweeper
(shared/tools/nab/code/nab/sweeper.py): for design screening in benchmarks/nab.py, where
nab_score.py's full run (every reference detector, every profile) would take minutes per
candidate. Runs under a python with pandas < 2 (NAB's code imports it).

    python nab_sweep.py CANDIDATES.npz SERIES_DIR WINDOWS.json

CANDIDATES.npz: arrays named CANDIDATE/SERIES (one anomaly score per row). Prints one
JSON object: candidate -> normalised standard score (100 perfect, 0 never alarms), with
the threshold NAB's optimiser picks. Windows that start inside the probationary period
are dropped, as NAB's labeler drops them.
"""

import csv
import datetime
import json
import sys
from pathlib import Path

candidates_path, series_dir, windows_path = sys.argv[1:4]
sys.path.insert(0, str(Path(windows_path).parent))
import numpy as np  # noqa: E402
from nab.sweeper import Sweeper  # noqa: E402
from nab.util import getProbationPeriod  # noqa: E402

COST = {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}


def parse(text):
    return datetime.datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S")


windows = json.loads(Path(windows_path).read_text())
data = np.load(candidates_path)
by_candidate = {}
for key in data.files:
    candidate, name = key.split("/", 1)
    by_candidate.setdefault(candidate, {})[name] = data[key]
stamps, limits = {}, {}
for name in next(iter(by_candidate.values())):
    group, file = name.split("__")
    with open(Path(series_dir) / f"{name}.csv") as f:
        stamps[name] = [parse(r["timestamp"]) for r in csv.DictReader(f)]
    probation = getProbationPeriod(0.15, len(stamps[name]))
    limits[name] = [(parse(s), parse(e)) for s, e in windows[f"{group}/{file}.csv"]
                    if stamps[name].index(parse(s)) >= probation]  # fmt: skip
n_windows = sum(len(v) for v in limits.values())
sweeper = Sweeper(probationPercent=0.15, costMatrix=COST)
out = {}
for candidate, series in by_candidate.items():
    rows = []
    for name, scores in series.items():
        rows += sweeper.calcSweepScore(stamps[name], list(map(float, scores)), limits[name], name)
    best = max(sweeper.calcScoreByThreshold(rows), key=lambda s: s.score)
    null = -n_windows * COST["fnWeight"]
    perfect = n_windows * COST["tpWeight"]
    out[candidate] = {"standard": round(100 * (best.score - null) / (perfect - null), 1),
                      "threshold": best.threshold}  # fmt: skip
print(json.dumps(out))
