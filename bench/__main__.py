"""Run every benchmark and write bench/results.json: ``python -m bench`` (or ``python bench``).

Each benchmark prints one JSON object; they are collected under their names (``python -m bench
attention moe_ffn`` reruns two and keeps the other entries). Ratios measured in
one run on one machine are what to compare (these machines are noisy).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["attention", "moe_ffn", "train_throughput", "generation", "data_loading", "memory"]


def main() -> None:
    names = sys.argv[1:] or BENCHES
    if {"-h", "--help"} & set(names):
        print(f"{__doc__}\nbenchmarks: {' '.join(BENCHES)}")
        return
    unknown = [name for name in names if name not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; choose from {BENCHES}")
    out = HERE / "results.json"
    results = json.loads(out.read_text()) if out.is_file() else {}  # a subset run replaces only its entries
    failed: list[str] = []
    for name in names:
        print(f"== {name}", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py")], capture_output=True, text=True, cwd=HERE)
        if proc.returncode:  # the last good entry stays; the error is shown, not recorded
            failed.append(name)
            print(f"{name} failed:\n{proc.stderr[-2000:]}", flush=True)
            continue
        start = proc.stdout.index("{")
        results[name] = json.loads(proc.stdout[start:])
        print(json.dumps(results[name], indent=2), flush=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    if failed:
        sys.exit(f"failed: {failed} (their earlier entries, if any, are kept)")


if __name__ == "__main__":
    main()
