"""Neural architecture search over NAS-Bench-201's cell space (issue 17).

- :mod:`metalab.nas.space`: the cells (operations, edges, :class:`Genotype` and its string form), defined once;
- :mod:`metalab.nas.network`: the discrete network of a genotype and DARTS's supernet;
- :mod:`metalab.nas.darts`: first-order DARTS's gradient and the DARTS- guard against skip collapse;
- :mod:`metalab.nas.fitness`: short-training fitness for regularized evolution and random search;
- :mod:`metalab.nas.plot`: a picture of a cell.

The Lightning shells are in :mod:`metalab.learners.nas`; the searchers are the project's ask/tell ones.
"""
