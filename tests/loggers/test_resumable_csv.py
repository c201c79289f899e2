"""A run resumed into its own folder keeps the CSV rows it logged before (Lightning's CSVLogger deletes them)."""

import csv

from metalab.loggers import ResumableCSVLogger


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_resumed_logger_keeps_earlier_rows_and_appends(tmp_path):
    first = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.log_metrics({"train/loss": 0.5}, step=1)
    first.save()
    resumed = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    resumed.log_metrics({"train/loss": 0.25, "val/acc": 90.0}, step=2)  # a new key rewrites the header
    resumed.save()
    rows = _rows(tmp_path / "csv" / "metrics.csv")
    assert [(r["step"], r["train/loss"]) for r in rows] == [("0", "1.0"), ("1", "0.5"), ("2", "0.25")]
    assert rows[2]["val/acc"] == "90.0" and rows[0]["val/acc"] == ""
