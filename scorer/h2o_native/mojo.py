"""An H2O GBM or DRF MOJO zip read as data: ``model.ini``, ``domains/``, ``trees/``.

Reads what h2o-genmodel's readers read (``hex.genmodel.ModelMojoReader.parseModelInfo`` /
``parseModelDomains``, ``hex.genmodel.algos.tree.SharedTreeMojoReader.readModelData``,
``GbmMojoReader``, ``DrfMojoReader``) and refuses, with :class:`Unsupported` naming why, every
MOJO whose scoring this package does not reproduce exactly: another algorithm, another MOJO
version, calibration, an offset or weights column, a categorical encoding other than H2O's own,
a distribution or link function not implemented here.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scorer.errors import BundleCodeError

#: MOJO versions whose layout and scoring (``ScoreTree2``) this package implements, per algorithm:
#: what h2o 3.46 writes (``GbmMojoReader.mojoVersion()``, ``DrfMojoReader.mojoVersion()``).
MOJO_VERSIONS = {"gbm": {"1.40"}, "drf": {"1.40"}}
CATEGORIES = {"Binomial", "Multinomial", "Regression"}
#: GBM families and the branch of ``GbmMojoModel.unifyPreds`` they take.
GBM_BINOMIAL = {"bernoulli", "quasibinomial", "modified_huber"}
GBM_REGRESSION = {"gaussian", "poisson", "gamma", "tweedie", "laplace", "quantile", "huber"}
#: ``GbmMojoModel.linkInv`` cases implemented (the ordinal links are for ordinal models only).
LINKS = {"identity", "log", "logit", "inverse"}


class Unsupported(Exception):
    """This MOJO cannot be scored natively (exactly); the message says why. Score it with genmodel."""


@dataclass(frozen=True)
class Mojo:
    """What scoring needs from a MOJO, as genmodel's readers load it."""

    path: Path
    info: dict[str, Any]
    columns: list[str]  # every column, the response last (GenModel._names)
    domains: list[list[str] | None]  # per column (GenModel._domains)
    n_features: int
    algo: str  # "gbm" or "drf"
    category: str  # Binomial, Multinomial, Regression
    n_classes: int
    ntree_groups: int
    ntrees_per_group: int
    trees: list[bytes | None]  # SharedTreeMojoModel._compressed_trees, index class * groups + group

    @property
    def features(self) -> list[str]:
        return self.columns[: self.n_features]


def _raw_value(text: str) -> Any:
    """A model.ini value, typed the way ``ModelMojoReader.RawValue`` parses it on demand."""
    if text == "null":
        return None
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [] if not inner else [_raw_value(v.strip()) for v in inner.split(",")]
    try:
        return float(text)
    except ValueError:
        return text


def _java_lines(text: str) -> list[str]:
    """``BufferedReader.readLine`` over ``text``: lines end at \\n, \\r or \\r\\n (not at the other
    separators str.splitlines knows), and a final line break does not start a line."""
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _unescape_newlines(text: str) -> str:
    """``hex.genmodel.utils.StringEscapeUtils.unescapeNewlines``: \\n, \\r and \\\\ escapes;
    a backslash before any other character is dropped."""
    out = []
    escaped = False
    for ch in text:
        if escaped:
            out.append({"n": "\n", "r": "\r"}.get(ch, ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    return "".join(out)


def _parse_ini(text: str) -> tuple[dict[str, Any], list[str], dict[int, str]]:
    """``ModelMojoReader.parseModelInfo``: the [info] key/values, [columns], [domains]."""
    info: dict[str, Any] = {}
    columns: list[str] = []
    domains: dict[int, str] = {}
    section = ""
    for raw in _java_lines(text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line in ("[info]", "[columns]", "[domains]"):
            section = line
        elif section == "[info]":
            parts = re.split(r"\s*=\s*", line, maxsplit=1)
            info[parts[0]] = _raw_value(parts[1]) if len(parts) == 2 else None
        elif section == "[columns]":
            columns.append(line)
        elif section == "[domains]":
            index, spec = re.split(r":\s*", line, maxsplit=1)
            domains[int(index)] = spec
    return info, columns, domains


def read_mojo(path: Path) -> Mojo:
    """Read and check ``path``; :class:`Unsupported` for a MOJO this package cannot score exactly,
    :class:`~scorer.errors.BundleCodeError` for a file that is not a MOJO at all."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleCodeError(f"{path}: not a loadable H2O MOJO: {type(exc).__name__}: {exc}") from exc
    with archive:
        names = set(archive.namelist())
        if "model.ini" not in names:
            raise BundleCodeError(f"{path}: not a loadable H2O MOJO: no model.ini")

        def text(name: str) -> str:
            return archive.read(name).decode("utf-8")

        info, columns, domain_specs = _parse_ini(text("model.ini"))
        algo = str(info.get("algo"))
        if algo not in MOJO_VERSIONS:
            raise Unsupported(f"{path}: algorithm {algo!r} is not scored natively (only GBM and DRF)")
        version = info.get("mojo_version")
        version_text = f"{version:.2f}" if isinstance(version, float) else str(version)
        if version_text not in MOJO_VERSIONS[algo]:
            raise Unsupported(f"{path}: {algo} MOJO version {version_text} is not scored natively "
                              f"(supported: {', '.join(sorted(MOJO_VERSIONS[algo]))})")
        _check(path, info, algo)
        n_columns = int(info["n_columns"])
        if len(columns) != n_columns:
            raise BundleCodeError(f"{path}: not a loadable H2O MOJO: {len(columns)} columns, n_columns={n_columns}")
        escape = info.get("escape_domain_values") is True
        domains: list[list[str] | None] = [None] * n_columns
        for index, spec in domain_specs.items():
            if index >= n_columns:
                continue
            count, file = spec.split(" ", 1)
            values = _java_lines(text(f"domains/{file}"))
            domains[index] = [_unescape_newlines(v) if escape else v for v in values]
            if len(values) != int(count):
                raise BundleCodeError(f"{path}: not a loadable H2O MOJO: domain file {file} has "
                                      f"{len(values)} values, not {count}")
        n_classes = int(info["n_classes"])
        # SharedTreeMojoReader.readModelData
        per_group = info.get("n_trees_per_class")
        if per_group is None:
            per_group = 1 if n_classes == 2 and not info.get("binomial_double_trees") else n_classes
        groups = int(info["n_trees"])
        trees: list[bytes | None] = [None] * (groups * per_group)
        for group in range(groups):
            for cls in range(per_group):
                name = f"trees/t{cls:02d}_{group:03d}.bin"
                if name in names:
                    trees[cls * groups + group] = archive.read(name)
    return Mojo(path=path, info=info, columns=columns, domains=domains, n_features=int(info["n_features"]),
                algo=algo, category=str(info["category"]), n_classes=n_classes, ntree_groups=groups,
                ntrees_per_group=int(per_group), trees=trees)


def _check(path: Path, info: dict[str, Any], algo: str) -> None:
    """Refuse what the native scorer does not reproduce."""
    if info.get("category") not in CATEGORIES:
        raise Unsupported(f"{path}: model category {info.get('category')!r} is not scored natively")
    if info.get("supervised") is not True:
        raise Unsupported(f"{path}: an unsupervised model is not scored natively")
    if info.get("endianness", "LITTLE_ENDIAN") != "LITTLE_ENDIAN":
        raise Unsupported(f"{path}: endianness {info.get('endianness')} is not scored natively")
    if info.get("offset_column") is not None:
        raise Unsupported(f"{path}: an offset column ({info['offset_column']}) is not scored natively")
    if info.get("weights_column") is not None:
        raise Unsupported(f"{path}: a weights column ({info['weights_column']}) is not scored natively")
    if info.get("treatment_column") is not None:
        raise Unsupported(f"{path}: an uplift model (treatment column) is not scored natively")
    if int(info["n_columns"]) != int(info["n_features"]) + 1:
        raise Unsupported(f"{path}: columns besides the features and the response (weights, offset or "
                          "fold column) are not scored natively")
    if info.get("calib_method") is not None:
        raise Unsupported(f"{path}: calibration ({info['calib_method']}) is not scored natively")
    encoding = str(info.get("_genmodel_encoding"))
    if encoding not in ("AUTO", "Enum"):
        raise Unsupported(f"{path}: categorical encoding {encoding} is not scored natively")
    if algo == "gbm":
        family = info.get("distribution")
        if family not in GBM_BINOMIAL | GBM_REGRESSION | {"multinomial"}:
            raise Unsupported(f"{path}: GBM distribution {family!r} is not scored natively")
        link = info.get("link_function")
        if link not in LINKS:
            raise Unsupported(f"{path}: GBM link function {link!r} is not scored natively")
    elif "binomial_double_trees" not in info:
        raise Unsupported(f"{path}: DRF MOJO without binomial_double_trees is not scored natively")
