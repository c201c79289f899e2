"""Search: typed spaces, ask/tell searchers (genetic algorithm, OpenAI-ES, CMA-ES) and the problems they run on.

Drive any searcher the same way, with numpy only::

    candidates = searcher.ask()
    searcher.tell(candidates, problem.evaluate(stack(candidates), seed))
"""

from metalab.search.base import Candidate, Searcher, TellError, stack
from metalab.search.es import CMAES, OpenAIES
from metalab.search.ga import GeneticAlgorithm
from metalab.search.space import CategoricalGene, FloatGene, IntGene, SearchSpace

__all__ = [
    "CMAES",
    "Candidate",
    "CategoricalGene",
    "FloatGene",
    "GeneticAlgorithm",
    "IntGene",
    "OpenAIES",
    "SearchSpace",
    "Searcher",
    "TellError",
    "stack",
]
