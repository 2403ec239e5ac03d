"""A small, real, healthcare-flavoured pipeline: predict malignant breast tumours.

extract (SQL over a local SQLite "warehouse" built from scikit-learn's bundled breast-cancer
data) → preprocess (stratified split, standardisation) → two models trained in parallel with
their own resources (logistic regression, gradient boosting) → evaluate both (ROC AUC,
accuracy, confusion matrix) → select the best model, the pipeline's output.

    argosy run examples/demo.py:breast_cancer
    argosy run examples/demo.py:breast_cancer -p test_fraction=0.3 -p seed=7 --output json
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Annotated, NamedTuple

import pandas as pd

from argosy import Metrics, pipeline, serializer, step

FEATURES = ["mean radius", "mean texture", "mean perimeter", "mean area", "mean smoothness",
            "mean compactness", "mean concavity", "mean concave points", "worst radius",
            "worst texture", "worst perimeter", "worst area", "worst smoothness",
            "worst concavity", "worst concave points"]  # fmt: skip


class Prepared(NamedTuple):
    train: pd.DataFrame
    test: pd.DataFrame


class Selection(NamedTuple):
    model: Annotated[object, serializer("joblib")]
    name: str
    metrics: Metrics


def _warehouse(folder: Path) -> Path:
    """A SQLite 'warehouse' of patients and their biopsy measurements (from scikit-learn)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "benign"})
    frame.insert(0, "patient_id", range(1, len(frame) + 1))
    path = folder / "warehouse.sqlite"
    with sqlite3.connect(path) as db:
        frame[["patient_id", "benign"]].to_sql("patients", db, index=False)
        frame.drop(columns=["benign"]).to_sql("biopsies", db, index=False)
    return path


@step(cpu=1, memory="1Gi")
def extract(min_radius: float = 0.0) -> pd.DataFrame:
    """Query the warehouse: one row per patient, the label is 1 for a malignant tumour."""
    with tempfile.TemporaryDirectory() as tmp:
        db_path = _warehouse(Path(tmp))
        columns = ", ".join(f'b."{c}"' for c in FEATURES)
        query = (
            f"SELECT p.patient_id, {columns}, 1 - p.benign AS malignant "
            'FROM patients p JOIN biopsies b USING (patient_id) WHERE b."mean radius" >= ? '
            "ORDER BY p.patient_id"
        )
        with sqlite3.connect(db_path) as db:
            frame = pd.read_sql_query(query, db, params=(min_radius,))
    print(f"extracted {len(frame)} patients, {int(frame.malignant.sum())} malignant")
    return frame


@step(cpu=1, memory="1Gi")
def preprocess(data: pd.DataFrame, test_fraction: float = 0.25, seed: int = 42) -> Prepared:
    """Stratified split, then standardise features with statistics of the training part only."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(
        data, test_size=test_fraction, random_state=seed, stratify=data["malignant"]
    )
    mean, std = train[FEATURES].mean(), train[FEATURES].std(ddof=0)
    train, test = train.copy(), test.copy()
    train[FEATURES] = (train[FEATURES] - mean) / std
    test[FEATURES] = (test[FEATURES] - mean) / std
    print(f"train {len(train)} rows, test {len(test)} rows")
    return Prepared(train.reset_index(drop=True), test.reset_index(drop=True))


@step(cpu=1, memory="1Gi", retries=1, env={"OMP_NUM_THREADS": "1"})
def train_logistic(
    train: pd.DataFrame, c: float = 1.0, seed: int = 42
) -> Annotated[object, serializer("joblib")]:
    """L2-regularised logistic regression."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    return model.fit(train[FEATURES], train["malignant"])


@step(cpu=1, memory="1Gi", retries=1)
def train_boosting(
    train: pd.DataFrame, trees: int = 150, seed: int = 42
) -> Annotated[object, serializer("joblib")]:
    """Gradient-boosted trees."""
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=trees, max_depth=2, random_state=seed)
    return model.fit(train[FEATURES], train["malignant"])


@step(cpu=1, memory="1Gi")
def evaluate(model: Annotated[object, serializer("joblib")], test: pd.DataFrame) -> Metrics:
    """ROC AUC, accuracy and the confusion matrix (tn, fp, fn, tp) on held-out patients."""
    from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score

    scores = model.predict_proba(test[FEATURES])[:, 1]
    predicted = (scores >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(test["malignant"], predicted, labels=[0, 1]).ravel()
    metrics = Metrics(
        roc_auc=round(float(roc_auc_score(test["malignant"], scores)), 6),
        accuracy=round(float(accuracy_score(test["malignant"], predicted)), 6),
        tn=int(tn), fp=int(fp), fn=int(fn), tp=int(tp),
    )  # fmt: skip
    print(type(model).__name__, dict(metrics))
    return metrics


@step(cpu=0.5)
def select_best(
    logistic: Annotated[object, serializer("joblib")],
    logistic_metrics: Metrics,
    boosting: Annotated[object, serializer("joblib")],
    boosting_metrics: Metrics,
) -> Selection:
    """The model with the higher ROC AUC (accuracy breaks ties)."""
    candidates = [
        ("logistic", logistic, logistic_metrics),
        ("boosting", boosting, boosting_metrics),
    ]
    name, model, metrics = max(candidates, key=lambda c: (c[2]["roc_auc"], c[2]["accuracy"]))
    print(f"best model: {name} (ROC AUC {metrics['roc_auc']})")
    return Selection(model, name, metrics)


@pipeline
def breast_cancer(
    test_fraction: float = 0.25, seed: int = 42, c: float = 1.0, trees: int = 150
) -> Selection:
    data = extract()
    prepared = preprocess(data=data, test_fraction=test_fraction, seed=seed)
    logistic = train_logistic(train=prepared.train, c=c, seed=seed)
    boosting = train_boosting(train=prepared.train, trees=trees, seed=seed)
    return select_best(
        logistic=logistic,
        logistic_metrics=evaluate(model=logistic, test=prepared.test),
        boosting=boosting,
        boosting_metrics=evaluate(model=boosting, test=prepared.test),
    )
