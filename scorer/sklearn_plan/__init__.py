"""scikit-learn pipelines compiled to scoring plans: fitted parameters as data, arithmetic in numpy.

A plan scores the rows a fitted pipeline scores, with the pipeline's answers (labels equal, numbers within
1e-12), without scikit-learn's per-call validation, pandas round trips and, from a cached plan, without
importing scikit-learn or scipy at all.

- :mod:`.base`: what a compiled step (an :class:`~.base.Op`) is, its stored form, Unsupported/InvalidData.
- :mod:`.preprocess`: encoders, scalers, imputers, known-ufunc FunctionTransformers.
- :mod:`.trees`: tree ensembles (HistGradientBoosting, forests, decision trees, gradient boosting).
- :mod:`.linear`: linear models.
"""
