"""Loggers: Lightning's CSV logger, except that a resumed run keeps the curve it had logged."""

from metalab.loggers.csv import ResumableCSVLogger

__all__ = ["ResumableCSVLogger"]
