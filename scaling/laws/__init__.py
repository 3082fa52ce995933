"""The analysis layer: scaling-law forms, robust fits, Chinchilla approaches, bootstrap, backtests.

- `forms`: the laws (Chinchilla, Kaplan, single-variable power laws, broken power laws);
- `fitting`: Huber on log residuals, summed; batched multi-start L-BFGS in JAX float64;
- `parametric`, `chinchilla` (approaches 1-3), `kaplan`, `bnsl`: fits of a table's columns;
- `bootstrap`, `backtest`, `allocation`: intervals, held-out scores, N_opt(C) and D_opt(C);
- `tables`: loading and validating runs; `result`: FitResult (JSON); `api.fit_table`: one call;
- `published`: Hoffmann's and Epoch's published constants.
"""
