"""CI's gate: read the test run's document (``argosy runs wait RUN --output json``) and fail
the build unless it succeeded and the best model's ROC AUC reaches the threshold.

    python examples/ci/gate.py run.json 0.95
"""

import json
import sys
from pathlib import Path

run = json.loads(Path(sys.argv[1]).read_text())
threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 0.95
auc = run["outputs"]["metrics"]["value"]["roc_auc"]
print(
    f"run {run['id']}: {run['status']}, best model {run['outputs']['name']['value']}, ROC AUC {auc}"
)
sys.exit(0 if run["status"] == "succeeded" and auc >= threshold else 1)
