"""Random scikit-learn pipelines (tests/sklearn_pipelines.py) against their compiled plans, row by row.

CI compares a fixed set of seeds; ``scripts/plan-soak --seed S --count N`` runs any number. A pipeline
either compiles, and then every scoring row must give the same labels and numbers within 1e-12 (and
where scikit-learn refuses a row the plan refuses it too), and a tree model's estimator must answer as
scikit-learn's at its split points (the load-time check, verify.split_difference), or it raises
Unsupported naming the step.
"""

from __future__ import annotations

import collections
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sklearn_pipelines import Case, make_case  # noqa: E402

from scorer.sklearn_plan.base import InvalidData, Unsupported  # noqa: E402
from scorer.sklearn_plan.model import PlanModel  # noqa: E402
from scorer.sklearn_plan.pipeline import Plan, compile_pipeline, final_step  # noqa: E402
from scorer.sklearn_plan.verify import compare_rows, split_difference  # noqa: E402
from scorer.table import frame_from_arrays  # noqa: E402

SEEDS = range(300)


def sklearn_answer(pipeline: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """What scorer's DefaultModel answers: prediction, then probability_<class> per class."""
    classes = getattr(pipeline, "classes_", None)
    if classes is None:
        return pd.DataFrame({"prediction": np.asarray(pipeline.predict(frame))})
    proba = np.asarray(pipeline.predict_proba(frame))
    columns = {"prediction": np.asarray(classes)[proba.argmax(axis=1)]}
    columns.update({f"probability_{c}": proba[:, i] for i, c in enumerate(classes.tolist())})
    return pd.DataFrame(columns)


def plan_answer(model: PlanModel, frame: pd.DataFrame) -> pd.DataFrame:
    out = model.predict_columns({c: frame[c].to_numpy() for c in frame.columns}, len(frame))
    return frame_from_arrays(list(out), list(out.values()), len(frame))


def check(case: Case) -> tuple[str, str]:
    """("compiled", "") when every row agrees, ("unsupported", why), or ("mismatch", the first difference)."""
    try:
        plan = compile_pipeline(case.pipeline)
    except Unsupported as exc:
        return "unsupported", str(exc)
    classes = getattr(case.pipeline, "classes_", None)
    model = PlanModel(plan, None if classes is None else np.asarray(classes), None)
    for block in case.score:
        frame = frame_from_arrays(list(block.columns), [block[c].to_numpy() for c in block.columns], len(block))
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            found = compare_rows(lambda f: plan_answer(model, f), lambda f: sklearn_answer(case.pipeline, f), frame)
        if found is not None:
            return "mismatch", found
    features = _features(plan, case.score)
    if features is not None:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            _, found = split_difference(plan, final_step(case.pipeline), features)
        if found is not None:
            return "mismatch", found
    return "compiled", ""


def _features(plan: Plan, blocks: list[pd.DataFrame]) -> Any:
    """The estimator's input for the first scoring row the plan answers (the split points start from it)."""
    for block in blocks:
        for i in range(len(block)):
            row = block.iloc[i:i + 1]
            try:
                return plan.features({c: row[c].to_numpy() for c in row.columns}, 1)
            except InvalidData:
                continue
    return None


def outcome(seed: int) -> tuple[str, str, list[str]]:
    """Fit, compile and compare one seed: (verdict, detail, the pipeline's description)."""
    case = make_case(seed)
    verdict, detail = check(case)
    return verdict, detail, case.description


@pytest.fixture(scope="module")
def outcomes() -> dict[int, tuple[str, str, list[str]]]:
    return {seed: outcome(seed) for seed in SEEDS}


def test_random_pipelines_score_as_scikit_learn(outcomes: dict[int, tuple[str, str, list[str]]]) -> None:
    mismatches = {seed: (detail, description) for seed, (verdict, detail, description) in outcomes.items()
                  if verdict == "mismatch"}
    assert not mismatches, "\n".join(f"seed {s}: {d} [{' '.join(desc)}]" for s, (d, desc) in mismatches.items())


def test_the_random_set_covers_what_it_claims(outcomes: dict[int, tuple[str, str, list[str]]]) -> None:
    compiled = [desc for verdict, _, desc in outcomes.values() if verdict == "compiled"]
    unsupported = collections.Counter(detail for verdict, detail, _ in outcomes.values() if verdict == "unsupported")
    assert len(compiled) >= 0.9 * len(outcomes), unsupported.most_common(10)
    tags = collections.Counter(tag.split(":{")[0] for desc in compiled for tag in desc)
    for tag in ("estimator:hgb", "estimator:rf", "estimator:et", "estimator:dt", "estimator:gb", "estimator:logistic",
                "estimator:linear", "numeric:standard", "numeric:minmax", "numeric:robust", "numeric:maxabs",
                "numeric:impute", "numeric:ufunc", "categorical:onehot", "categorical:ordinal",
                "categorical:target", "categorical:impute-onehot", "hgb-native-categorical", "task=multiclass"):
        assert tags[tag] >= 3, (tag, tags)


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Random scikit-learn pipelines against their plans.")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    verdicts: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    for seed in range(args.seed, args.seed + args.count):
        try:
            case = make_case(seed)
        except Exception as exc:  # the generator drew a pipeline scikit-learn cannot fit: say so, go on
            verdicts["unfit"] += 1
            print(f"seed {seed}: could not fit: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            continue
        verdict, detail = check(case)
        verdicts[verdict] += 1
        if verdict == "unsupported":
            reasons[detail] += 1
        if verdict == "mismatch":
            print(f"seed {seed}: MISMATCH {detail} [{' '.join(case.description)}]", flush=True)
    print(f"{args.count} pipelines from seed {args.seed}: {dict(verdicts)}")
    for reason, count in reasons.most_common():
        print(f"  unsupported x{count}: {reason}")
    return 1 if verdicts["mismatch"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
