"""Print the mutation score from mutmut's ``export-cicd-stats`` file (``make mutation``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str) -> int:
    stats = json.loads(Path(path).read_text())
    killed = stats.get("killed", 0)
    survived = stats.get("survived", 0)
    timeouts = stats.get("timeout", 0)
    suspicious = stats.get("suspicious", 0)
    total = stats.get("total", 0)
    tested = killed + survived + timeouts + suspicious
    score = (killed + timeouts) / tested if tested else 0.0
    print(
        f"mutation score: {score:.1%} ({killed} killed, {timeouts} timed out, "
        f"{survived} survived, {suspicious} suspicious, "
        f"{stats.get('no_tests', 0)} without tests, {stats.get('skipped', 0)} skipped; "
        f"{total} mutants)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
