"""``inspect``: print, as JSON, what the pipeline understands of the competition's files."""

from __future__ import annotations

import json

from pipeline.options import Options


def run(opts: Options) -> int:
    from pipeline.data import load

    print(json.dumps(load(opts).layout.to_json(), indent=2))
    return 0
