"""Studies and records: run what has not run, collect what runs and benchmarks measured, write Markdown.

- :mod:`metalab.report.records`: ``append_record`` for benchmark scripts (one JSON line per run).
- :mod:`metalab.report.tables`: tables in results files generated from those records.
- :mod:`metalab.report.study`: a study file (experiments x seeds x overrides, a budget) -> runs.
- :mod:`metalab.report.collect` / :mod:`metalab.report.markdown`: run records -> ``report.md`` and figures.
- :mod:`metalab.report.cli`: the ``metalab report`` and ``metalab tables`` commands.
"""
