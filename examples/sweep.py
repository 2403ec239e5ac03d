"""A hyper-parameter sweep: one ``train.map()`` over six regularisation strengths, each
iteration its own task (``train[0]`` ... ``train[5]``), then the best one picked.

    argosy run examples/sweep.py:sweep
    argosy ui            # then open the run, click 'train' and 'Compare iterations'

Small and fast on purpose (scikit-learn's bundled breast-cancer data, logistic regression):
it is the example the web UI's comparison page is tested with.
"""

from __future__ import annotations

from argosy import Metrics, pipeline, step


@step
def strengths(count: int = 6) -> list:
    """The regularisation strengths to try: 0.001, 0.01, ... (one per iteration)."""
    return [round(10.0 ** (k - 3), 6) for k in range(count)]


@step(cpu=0.5)
def train(c: float, seed: int = 7) -> Metrics:
    """Fit a logistic regression with strength ``c``; score it on a held-out quarter."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    model.fit(x_train, y_train)
    scores = model.predict_proba(x_test)[:, 1]
    accuracy = float(model.score(x_test, y_test))
    print(f"C={c}: accuracy {accuracy:.4f}")
    return Metrics(
        accuracy=round(accuracy, 6), roc_auc=round(float(roc_auc_score(y_test, scores)), 6)
    )


@step
def best(results: list, values: list) -> dict:
    """The strength with the highest ROC AUC (accuracy breaks ties)."""
    ranked = sorted(
        zip(values, results, strict=True),
        key=lambda pair: (pair[1]["roc_auc"], pair[1]["accuracy"]),
    )
    c, metrics = ranked[-1]
    print(f"best C={c}: {metrics}")
    return {"c": c, **metrics}


@pipeline
def sweep(count: int = 6, seed: int = 7) -> dict:
    values = strengths(count=count)
    results = train.map(values, seed=seed)
    return best(results=results, values=values)
