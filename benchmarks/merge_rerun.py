"""Replace the predict rows of some architectures in a full run by those of a later run.

``python benchmarks/merge_rerun.py results/full.json results/rerun.json --reason "..."``: the rows
of the architectures measured in the second file replace theirs in the first, and the first records
when and why (``reruns``), which ``make_table.py`` prints above the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("full", type=Path)
    parser.add_argument("rerun", type=Path)
    parser.add_argument("--reason", required=True)
    args = parser.parse_args(argv)
    full, rerun = json.loads(args.full.read_text()), json.loads(args.rerun.read_text())
    rows = rerun["sections"]["predict"]
    archs = sorted({r["arch"] for r in rows})
    kept = [r for r in full["sections"]["predict"] if r["arch"] not in archs]
    full["sections"]["predict"] = kept + rows
    full.setdefault("reruns", []).append({"started": rerun["started"], "archs": archs, "reason": args.reason,
                                          "load_at_start": rerun.get("load_at_start")})
    args.full.write_text(json.dumps(full, indent=1))
    print(f"{len(rows)} rows of {', '.join(archs)} replaced in {args.full}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
