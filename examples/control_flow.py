"""Control flow, one example each: a sub-pipeline mapped over folds (fan-out), an exit
handler, and a condition with elif/else whose branches merge with one_of.

    argosy run examples/control_flow.py:model_selection -p folds=5 -p threshold=0.95
"""

from __future__ import annotations

from typing import Any

from argosy import Elif, Else, If, exit_handler, one_of, pipeline, step


@step
def make_folds(folds: int) -> list:
    """Which fold each cross-validation iteration holds out (known only at run time)."""
    return list(range(folds))


@step(cpu=0.5)
def fit(fold: int, folds: int, seed: int = 7) -> float:
    """Train on every fold but one; return the score on the held-out fold."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    x, y = load_breast_cancer(return_X_y=True)
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y))
    train, test = splits[fold]
    model = LogisticRegression(max_iter=5000).fit(x[train], y[train])
    return round(float(model.score(x[test], y[test])), 6)


@step
def check(score: float) -> float:
    return score


@pipeline
def one_fold(fold: int, folds: int = 5) -> float:
    """A sub-pipeline: node paths become fold[i]/fit, fold[i]/check."""
    return check(score=fit(fold=fold, folds=folds))


@step
def mean(scores: list) -> float:
    return round(sum(scores) / len(scores), 6)


@step
def promote(score: float) -> str:
    return f"promoted (mean accuracy {score})"


@step
def review(score: float) -> str:
    return f"sent for review (mean accuracy {score})"


@step
def reject(score: float) -> str:
    return f"rejected (mean accuracy {score})"


@step
def notify(status: dict[str, Any], channel: str) -> str:
    """Runs after the training block whatever happened: a notification, or clean-up."""
    failed = [path for path, t in status["tasks"].items() if t["state"] == "failed"]
    message = f"[{channel}] training {status['status']}" + (f"; failed: {failed}" if failed else "")
    print(message)
    return message


@pipeline
def model_selection(folds: int = 5, threshold: float = 0.97, review_at: float = 0.93) -> str:
    with exit_handler(notify, channel="#ml-ops"):
        scores = one_fold.map(make_folds(folds=folds), parallelism=2, folds=folds, name="fold")
        accuracy = mean(scores=scores)
    with If(accuracy >= threshold):
        decision = promote(score=accuracy)
    with Elif(accuracy >= review_at):
        second = review(score=accuracy)
    with Else():
        third = reject(score=accuracy)
    return one_of(decision, second, third)
