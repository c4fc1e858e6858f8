"""`make bench-js`: the JavaScript runtime in Node (onnxruntime-node) and in headless
Chromium (onnxruntime-web, wasm, one thread) beside the Python runtime on the same bundles,
the same inputs and the same calls, in the same run: batch-1 score latency (p50, p99),
batch-4096 throughput, a stream's latency per CSV line, and the page's time from the start
of its navigation to its first score. Writes benchmarks/results/js.{json,md}.

Each side times its own calls with its own clock (Python: perf_counter_ns; Node and
Chromium: performance.now(), 5 us resolution in the cross-origin isolated page). Python
scores with its defaults (one intra-op thread under 12.5 M multiply-adds a call, all cores
above: the batch of 4096); the JavaScript sessions run on one thread.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime

from vae_edge.runtime import EdgeVAE
from vae_edge.runtime.bench import time_calls

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "js" / "test" / "golden"
RESULTS = REPO / "benchmarks" / "results"
SECONDS = float(os.environ.get("SECONDS_PER_CASE", 3))


def cases() -> list[dict]:
    mnist = json.loads((GOLDEN / "mnist.json").read_text())
    table = json.loads((GOLDEN / "table.json").read_text())
    series = json.loads((GOLDEN / "series.json").read_text())
    return [
        {"name": "MNIST (shipped, 784 pixels, -ELBO per complexity bit)", "path": None,
         "url": "/models/mnist", "sample": mnist["input"]["data"][:784], "shape": [28, 28]},
        {"name": "table (6 features, -L_5)", "path": GOLDEN / "table_model",
         "url": "/models/table", "sample": table["input"]["data"][:6], "shape": [6]},
        {"name": "sensor stream (conv1d, window 48, a CSV line each)",
         "path": GOLDEN / "series_model", "url": "/models/sensor", "lines": series["lines"]},
    ]  # fmt: skip


def python_side(case: dict) -> dict:
    model = EdgeVAE.load(case["path"])
    if "lines" in case:
        lines = case["lines"]
        state = {"stream": model.stream(), "i": 0}

        def push():
            if state["i"] == len(lines):
                state["stream"], state["i"] = model.stream(), 0
            state["stream"].push_line(lines[state["i"]])
            state["i"] += 1

        t = time_calls({"push": push}, seconds=SECONDS)["push"]
        return {"stream_p50_us": float(np.percentile(t, 50)),
                "stream_p99_us": float(np.percentile(t, 99)), "calls": len(t)}  # fmt: skip
    one = np.asarray(case["sample"], np.float32).reshape(1, *case["shape"])
    big = np.repeat(one, 4096, axis=0)
    t = time_calls({"one": lambda: model.score(one), "big": lambda: model.score(big)},
                   seconds=SECONDS)  # fmt: skip
    return {
        "p50_us": float(np.percentile(t["one"], 50)),
        "p99_us": float(np.percentile(t["one"], 99)),
        "calls": len(t["one"]),
        "batch4096_samples_per_s": 4096 / (float(np.percentile(t["big"], 50)) / 1e6),
    }


def js_side(script: str, cases_: list[dict], key: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "cases.json"
        js_cases = [{k: v for k, v in c.items() if k not in ("path", "url")}
                    | {"bundle": str(c[key] or REPO / "runtime" / "default_model")}
                    for c in cases_]  # fmt: skip
        bundles = {
            "mnist": str(REPO / "runtime" / "default_model"),
            "table": str(GOLDEN / "table_model"),
            "series": str(GOLDEN / "series_model"),
        }
        urls = {"mnist": "/models/mnist", "table": "/models/table", "series": "/models/sensor"}
        spec.write_text(json.dumps({"cases": js_cases, "seconds": SECONDS, "golden": str(GOLDEN),
                                    "bundles": bundles, "urls": urls}))  # fmt: skip
        out = subprocess.run(["node", script, str(spec)], cwd=REPO / "js", check=True,
                             capture_output=True, text=True, timeout=1200)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def node_versions() -> dict:
    lock = json.loads((REPO / "js" / "package-lock.json").read_text())["packages"]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"node": node} | {
        name: lock[f"node_modules/{name}"]["version"]
        for name in ("onnxruntime-node", "onnxruntime-web", "playwright-core")
    }


def main() -> None:
    all_cases = cases()
    python = [python_side(c) | {"name": c["name"]} for c in all_cases]
    node_run = js_side("bench/bench.js", all_cases, "path")
    node = node_run["results"]
    browser = js_side("bench/browser.js", all_cases, "url")
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "versions": {
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
            "chromium": browser["userAgent"],
        }
        | node_versions(),  # fmt: skip
        "seconds_per_case": SECONDS,
        "python": python,
        "node": node,
        "chromium": browser["results"],
        "chromium_cross_origin_isolated": browser["crossOriginIsolated"],
        "page_first_score_ms": browser["firstScoreMs"],
        "parity": node_run["parity"] | browser["parity"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "js.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "js.md").write_text(table(result))
    print(table(result))


def table(r: dict) -> str:
    rows = [
        "| bundle | measure | Python | Node | Chromium (wasm, 1 thread) | Node / Python |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for py, node, web in zip(r["python"], r["node"], r["chromium"], strict=True):
        measures = (("stream_p50_us", "stream p50 per line (us)"),
                    ("stream_p99_us", "stream p99 per line (us)")) if "stream_p50_us" in py else (
                   ("p50_us", "batch 1 p50 (us)"), ("p99_us", "batch 1 p99 (us)"),
                   ("batch4096_samples_per_s", "batch 4096 (samples/s)"))  # fmt: skip
        for key, label in measures:
            rows.append(f"| {py['name']} | {label} | {py[key]:,.0f} | {node[key]:,.0f} | "
                        f"{web[key]:,.0f} | {node[key] / py[key]:.2f}x |")  # fmt: skip
    parity = [
        "| model | consumer | readings or samples | scores: max relative difference | feature "
        "losses (of the sample's largest) | likelihood: max difference | flags and alarms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    consumers = {"node": "Node, onnxruntime-node", "wasm": "Node, onnxruntime-web (wasm)",
                 "chromium": "Chromium, onnxruntime-web (wasm)"}  # fmt: skip
    for model in ("mnist", "table", "series"):
        for consumer, label in consumers.items():
            p = r["parity"][consumer][model]
            features = f"{p['maxRelFeatures']:.1e}" if "maxRelFeatures" in p else ""
            likelihood = f"{p['maxLikelihoodDiff']:.1e}" if "maxLikelihoodDiff" in p else ""
            parity.append(f"| {model} | {label} | {p['checked']} | {p['maxRelScore']:.1e} | "
                          f"{features} | {likelihood} | identical |")  # fmt: skip
    first = sorted(r["page_first_score_ms"])
    v = r["versions"]
    return (
        "# The JavaScript runtime beside Python (`make bench-js`)\n\n"
        f"{r['machine']}; Python {v['python']}, onnxruntime {v['onnxruntime']}, NumPy "
        f"{v['numpy']}; Node {v['node']}, onnxruntime-node {v['onnxruntime-node']}, "
        f"onnxruntime-web {v['onnxruntime-web']}; {v['chromium']}. Each side timed its own "
        f"calls for {r['seconds_per_case']:g} s per measure, in the same run, on the same "
        "bundles and inputs. Python's batch of 4096 runs its graphs on all cores; Node's and "
        "Chromium's sessions on one thread.\n\n" + "\n".join(rows) + "\n\n"
        "Parity with Python's golden vectors (`make golden`; a mismatch beyond 1e-5 relative "
        "for scores, 1e-4 for likelihoods or any flag or alarm fails the run):\n\n"
        + "\n".join(parity)
        + "\n\n"
        f"The page (`make web`): its first score {first[len(first) // 2]:.0f} ms after the start "
        f"of its navigation (median of {len(first)} loads: "
        + ", ".join(f"{t:.0f}" for t in first)
        + " ms), the two bundles loaded and checked.\n"
    )


if __name__ == "__main__":
    sys.exit(main())
