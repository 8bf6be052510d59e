"""The dashboard: optuna-dashboard on the tuner's database, with this project's plots attached.

- `plots`: plotly figures from the attributes the study loop stores (per trial: SWA/full usage,
  queue and running requests over time, the pool layout; per study: throughput/TTFT against the
  ratio with SGLang's default, the hand rule and the optimum marked; the Pareto front).
- `attach`: puts those figures and Markdown notes into the studies through optuna-dashboard's own
  mechanisms (`save_plotly_graph_object`, `save_note`); idempotent.
- `server`: serves optuna-dashboard (loopback by default) with a helpful page while there are no studies.
- `report`: the same figures as a static HTML (or PNG, with kaleido) report.
"""
