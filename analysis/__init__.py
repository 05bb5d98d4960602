"""Analysis of ganlab's results tables: aggregates, Plotly figures and the HTML report.

The package reads only the tables (through `ganlab.results.load`) and, for parameter
importance, the sweep's Optuna journal. Each figure is computed by a `get_*_info` function
that returns plain data and drawn by a `plot_*` function that returns a `go.Figure`.
`analysis.report.write_report(run_dir)` assembles them into `RUN_DIR/report.html`: it reads the
run once (`analysis.loading`), builds the sections and lays them out (`analysis.page`, the HTML
and CSS). Configurations are ranked by `ganlab.results.ranking`, as `ganlab results` ranks them.
"""
