"""Tier 0+1 precision and recall on the labelled trace set; prints one JSON object.

python bench/tier1_quality.py [path/to/labelled_traces.yaml]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from evaluators.quality import measure

DEFAULT_SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "labelled_traces.yaml"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SET
    traces = yaml.safe_load(path.read_text())["traces"]
    print(json.dumps(measure(traces), indent=2))


if __name__ == "__main__":
    main()
