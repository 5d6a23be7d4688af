"""The replica's entry module keeps pyarrow out (35 MiB a replica) and what it serves still
works: a scikit-learn pipeline, pandas included, fits and predicts without it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_replica_process_never_loads_pyarrow_and_still_predicts() -> None:
    code = textwrap.dedent(
        """
        import sys
        import driftloop_model_api.__main__
        import numpy as np
        import pandas as pd
        import skops.io
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        rng = np.random.default_rng(0)
        X = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
        y = X["a"] * 2 + X["b"]
        model = make_pipeline(StandardScaler(), HistGradientBoostingRegressor(max_iter=20))
        model.fit(X, y)
        model.predict(X.to_numpy()[:1])
        print(round(float(model.predict(X.iloc[:1])[0]), 3), "pyarrow" in sys.modules)
        import pyarrow
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = done.stdout.split()
    assert len(lines) == 2 and lines[1] == "False", done.stdout + done.stderr
    assert "ModuleNotFoundError: pyarrow is not loaded in a model replica" in done.stderr
