"""Label-efficiency benchmark, in-process mode: the selection core driven directly, no broker.

`active-stream bench label-efficiency --mode inprocess` streams a data set once per seed through
each strategy under the same hard label cap, the same model and the same retrain cadence, and
writes `results.json`, a PNG plot and a table. Entry points: `cli.add_parser` / `cli.main`;
the loop itself is `harness.run_benchmark`.
"""
