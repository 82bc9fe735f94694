"""Linear predictors (logistic, linear and generalized linear regression, naive Bayes) compiled to numpy.

Formulas from Spark 3.5: ``LogisticRegressionModel`` (LogisticRegression.scala), ``LinearRegressionModel``,
``GeneralizedLinearRegressionModel`` (its ``Family``/``Link`` objects) and ``NaiveBayesModel``; the
classifier output chain is :class:`~.predictor.Classifier`. A dot product with a saved sparse vector or
matrix runs over its stored entries only, as Spark's ``BLAS`` does.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from scorer.spark_native.base import Compiler, InvalidData, Unsupported
from scorer.spark_native.special import probit_unlink
from scorer.spark_native.layout import StageFiles
from scorer.spark_native.predictor import (
    Classifier,
    Regressor,
    dot,
    matrix,
    sequential_sum,
    softmax,
    vector,
    vector_support,
)

# GeneralizedLinearRegression.epsilon
EPSILON = 1e-16
DOUBLE_MAX = np.finfo(np.float64).max


def _data(stage: StageFiles) -> dict[str, Any]:
    rows = stage.rows("data")
    if len(rows) != 1:
        raise Unsupported(f"data/ holds {len(rows)} rows, expected 1")
    return rows[0]


class LogisticRegression(Classifier):
    """``LogisticRegressionModel``. Binary (``isMultinomial`` false): raw = ``[-m, m]`` with
    ``m = dot(x, coefficients) + intercept``, ``p0 = 1 / (1 + exp(-raw0))``, ``p1 = 1 - p0``; prediction
    compares with ``_binaryThresholds``: ``[t, log(t / (1 - t))]`` (``-inf``/``+inf`` at t = 0/1) where
    ``t = getThreshold`` once threshold or thresholds was set, else ``[0.5, 0.0]``. Multinomial: raw =
    ``coefficientMatrix x + interceptVector``, probability = ``Utils.softmax``, thresholds as any
    classifier. Spark 2.0 saved ``coefficients``/``intercept`` (binary) instead of the matrix."""

    def __init__(self, stage: StageFiles) -> None:
        d = _data(stage)
        if "coefficientMatrix" in d:
            self.coef, self.support = matrix(d["coefficientMatrix"])
            self.intercepts = vector(d["interceptVector"])
            self.multinomial = bool(d["isMultinomial"])
            num_classes = int(d["numClasses"])
        else:
            self.coef = vector(d["coefficients"])[None, :]
            self.support = vector_support(d["coefficients"])[None, :]
            self.intercepts = np.asarray([float(d["intercept"])])
            self.multinomial = False
            num_classes = int(d.get("numClasses") or 2)
        super().__init__(stage, num_classes)
        if self.multinomial:
            return
        if self.thresholds is not None and not stage.is_set("thresholds"):
            self.thresholds = None  # a saved default only; LogisticRegression has none for thresholds
        self.threshold, self.raw_threshold = 0.5, 0.0
        if stage.is_set("threshold") or stage.is_set("thresholds"):
            t = self._get_threshold(stage)
            self.threshold = t
            if t == 0.0:
                self.raw_threshold = -np.inf
            elif t == 1.0:
                self.raw_threshold = np.inf
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    self.raw_threshold = float(np.log(np.float64(t) / (1.0 - t)))

    @staticmethod
    def _get_threshold(stage: StageFiles) -> float:
        """``LogisticRegressionParams.getThreshold`` (with ``checkThresholdConsistency``)."""
        t = float(stage.param("threshold", 0.5))
        if not stage.is_set("thresholds"):
            return t
        ts = [float(v) for v in stage.param("thresholds")]
        if len(ts) != 2:
            raise Unsupported(f"binary logistic regression with {len(ts)} thresholds (Spark fails)")
        with np.errstate(divide="ignore", invalid="ignore"):
            equivalent = float(1.0 / (1.0 + np.float64(ts[0]) / np.float64(ts[1])))
        if stage.is_set("threshold") and not abs(t - equivalent) < 1e-5:
            raise Unsupported("threshold and thresholds disagree (Spark fails)")
        return equivalent

    def margins(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.coef.shape[1]:
            raise InvalidData(
                f"stage {self.uid}: column {self.features_col!r} has vectors of size {x.shape[1]}, "
                f"the model expects {self.coef.shape[1]}"
            )
        out = np.empty((x.shape[0], self.coef.shape[0]))
        for k in range(self.coef.shape[0]):
            out[:, k] = dot(x, self.coef[k], self.support[k]) + self.intercepts[k]
        return out

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        m = self.margins(x)
        if self.multinomial:
            return m
        return np.concatenate([-m, m], axis=1)

    def raw2probability(self, raw: np.ndarray) -> np.ndarray:
        if self.multinomial:
            return softmax(raw)
        with np.errstate(over="ignore"):
            p0 = 1.0 / (1.0 + np.exp(-raw[:, 0]))
        return np.stack([p0, 1.0 - p0], axis=1)

    def raw2prediction(self, raw: np.ndarray) -> np.ndarray:
        if self.multinomial:
            return super().raw2prediction(raw)
        return (raw[:, 1] > self.raw_threshold).astype(np.float64)

    def probability2prediction(self, probability: np.ndarray) -> np.ndarray:
        if self.multinomial:
            return super().probability2prediction(probability)
        return (probability[:, 1] > self.threshold).astype(np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.multinomial:
            return super().predict(x)
        with np.errstate(over="ignore"):
            score = 1.0 / (1.0 + np.exp(-self.margins(x)[:, 0]))
        return np.asarray(score > self.threshold, dtype=np.float64)


class LinearRegression(Regressor):
    """``LinearRegressionModel.predict``: ``dot(features, coefficients) + intercept``."""

    def __init__(self, stage: StageFiles) -> None:
        super().__init__(stage)
        d = _data(stage)
        self.coef, self.support = vector(d["coefficients"]), vector_support(d["coefficients"])
        self.intercept = float(d["intercept"])

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.coef.shape[0]:
            raise InvalidData(f"stage {self.uid}: column {self.features_col!r} has vectors of the wrong size")
        return dot(x, self.coef, self.support) + self.intercept


def _power(p: float) -> Callable[[np.ndarray], np.ndarray]:
    """``Power(linkPower).unlink``: ``exp(eta)`` at 0, else ``pow(eta, 1 / linkPower)``."""
    if p == 0.0:
        return np.exp
    return lambda eta: np.power(eta, 1.0 / p)


# Link.unlink of each named link (probit: breeze's Gaussian cdf over commons-math's erf, in special.py).
_LINKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda eta: eta,
    "logit": lambda eta: 1.0 / (1.0 + np.exp(-1.0 * eta)),
    "log": np.exp,
    "inverse": lambda eta: 1.0 / eta,
    "cloglog": lambda eta: 1.0 - np.exp(-1.0 * np.exp(eta)),
    "sqrt": lambda eta: eta * eta,
    "probit": probit_unlink,
}
_DEFAULT_LINKS = {"gaussian": "identity", "binomial": "logit", "poisson": "log", "gamma": "inverse"}


def _project_gaussian(mu: np.ndarray) -> np.ndarray:
    return np.where(np.isneginf(mu), -DOUBLE_MAX, np.where(np.isposinf(mu), DOUBLE_MAX, mu))


def _project_binomial(mu: np.ndarray) -> np.ndarray:
    return np.where(mu < EPSILON, EPSILON, np.where(mu > 1.0 - EPSILON, 1.0 - EPSILON, mu))


def _project_tweedie(mu: np.ndarray) -> np.ndarray:
    """``Tweedie.project`` (Poisson and Gamma extend Tweedie)."""
    return np.where(mu < EPSILON, EPSILON, np.where(np.isinf(mu), DOUBLE_MAX, mu))


class GeneralizedLinearRegression(Regressor):
    """``GeneralizedLinearRegressionModel``: ``eta = dot(features, coefficients) + intercept`` (offset 0),
    prediction = ``family.project(link.unlink(eta))``; ``linkPredictionCol`` (when not empty) = eta.
    Family and link as ``FamilyAndLink.apply``: tweedie picks Gaussian/Poisson/Gamma for variancePower
    0/1/2 and its link from linkPower (default ``1 - variancePower``); others their link param when set."""

    def __init__(self, stage: StageFiles) -> None:
        super().__init__(stage)
        if stage.param("offsetCol"):
            raise Unsupported("offsetCol is not implemented")
        d = _data(stage)
        self.coef, self.support = vector(d["coefficients"]), vector_support(d["coefficients"])
        self.intercept = float(d["intercept"])
        self.link_col = str(stage.param("linkPredictionCol") or "")
        self.outputs = self.outputs + ([self.link_col] if self.link_col else [])
        family = str(stage.param("family", "gaussian")).lower()
        if family == "tweedie":
            power = float(stage.param("variancePower", 0.0))
            kind = {0.0: "gaussian", 1.0: "poisson", 2.0: "gamma"}.get(power, "tweedie")
            link_power = float(stage.param("linkPower")) if stage.is_set("linkPower") else 1.0 - power
            named = {0.0: "log", 1.0: "identity", -1.0: "inverse", 0.5: "sqrt"}.get(link_power)
            if not stage.is_set("linkPower") and kind != "tweedie":
                named = _DEFAULT_LINKS[kind]  # the family object's defaultLink
            self.unlink = _LINKS[named] if named else _power(link_power)
        elif family in _DEFAULT_LINKS:
            kind = family
            link = str(stage.param("link")).lower() if stage.is_set("link") else _DEFAULT_LINKS[family]
            if link not in _LINKS:
                raise Unsupported(f"link {link!r} is not implemented")
            self.unlink = _LINKS[link]
        else:
            raise Unsupported(f"family {family!r} is not implemented")
        self.project = {"gaussian": _project_gaussian, "binomial": _project_binomial}.get(kind, _project_tweedie)

    def link_prediction(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.coef.shape[0]:
            raise InvalidData(f"stage {self.uid}: column {self.features_col!r} has vectors of the wrong size")
        return dot(x, self.coef, self.support) + self.intercept + 0.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        eta = self.link_prediction(x)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            return self.project(self.unlink(eta))

    def transform(self, cols: dict[str, np.ndarray]) -> np.ndarray | None:
        if not self.outputs:
            return None
        x = self.features(cols)
        eta = self.link_prediction(x)
        if self.prediction_col:
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                cols[self.prediction_col] = self.project(self.unlink(eta))
        if self.link_col:
            cols[self.link_col] = eta
        return None


class NaiveBayes(Classifier):
    """``NaiveBayesModel.predictRaw`` per ``modelType`` (multinomial, complement, bernoulli, gaussian) and
    ``raw2probabilityInPlace`` = ``Utils.softmax``. Multinomial and complement need features >= 0,
    bernoulli 0 or 1 (Spark's ``require`` fails the batch otherwise). Spark 2.x saved no ``sigma``."""

    def __init__(self, stage: StageFiles) -> None:
        d = _data(stage)
        self.pi = vector(d["pi"])
        self.theta, _ = matrix(d["theta"])
        self.kind = str(stage.param("modelType", "multinomial")).lower()
        if self.kind not in ("multinomial", "complement", "bernoulli", "gaussian"):
            raise Unsupported(f"modelType {self.kind!r}")
        super().__init__(stage, len(self.pi))
        if self.kind == "bernoulli":
            with np.errstate(divide="ignore", invalid="ignore"):
                neg = np.log1p(-np.exp(self.theta))
                self.theta_minus_neg = self.theta - neg
                self.pi_minus_theta_sum = self.pi + sequential_sum(neg)
        if self.kind == "gaussian":
            if d.get("sigma") is None:
                raise Unsupported("a gaussian model without sigma")
            self.sigma, _ = matrix(d["sigma"])
            with np.errstate(divide="ignore", invalid="ignore"):
                self.log_var_sum = sequential_sum(np.log(self.sigma))

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.theta.shape[1]:
            raise InvalidData(f"stage {self.uid}: column {self.features_col!r} has vectors of the wrong size")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if self.kind in ("multinomial", "complement"):
                if not ((x == 0) | (x > 0)).all():
                    raise InvalidData(f"stage {self.uid}: column {self.features_col!r}: naive Bayes needs values >= 0")
                if self.kind == "multinomial":
                    return np.asarray(x @ self.theta.T + self.pi)
                return self._complement(np.asarray(x @ self.theta.T))
            if self.kind == "bernoulli":
                if not ((x == 0) | (x == 1)).all():
                    raise InvalidData(f"stage {self.uid}: column {self.features_col!r}: Bernoulli naive Bayes needs 0 or 1")
                return np.asarray(x @ self.theta_minus_neg.T + self.pi_minus_theta_sum)
            raw = np.empty((x.shape[0], self.num_classes))
            for i in range(self.num_classes):
                s = np.zeros(x.shape[0])
                for j in range(self.theta.shape[1]):
                    d = x[:, j] - self.theta[i, j]
                    s = s + d * d / self.sigma[i, j]
                raw[:, i] = self.pi[i] - (s + self.log_var_sum[i]) / 2
            return raw

    @staticmethod
    def _complement(prob: np.ndarray) -> np.ndarray:
        """``complementCalculation``: each value minus the row's log-sum-exp (``log(sum exp(v - max)) + max``)."""
        biggest = prob.max(axis=1)
        total = np.zeros(prob.shape[0])
        for j in range(prob.shape[1]):
            total = total + np.exp(prob[:, j] - biggest)
        return np.asarray(prob - (np.log(total) + biggest)[:, None])

    def raw2probability(self, raw: np.ndarray) -> np.ndarray:
        return softmax(raw)


COMPILERS: dict[str, Compiler] = {
    "LogisticRegressionModel": LogisticRegression,
    "LinearRegressionModel": LinearRegression,
    "GeneralizedLinearRegressionModel": GeneralizedLinearRegression,
    "NaiveBayesModel": NaiveBayes,
}
