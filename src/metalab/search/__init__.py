"""Search: typed spaces, ask/tell searchers (genetic algorithm, OpenAI-ES, CMA-ES) and the problems they run on."""

from metalab.search.base import Candidate, Searcher, TellError
from metalab.search.ga import GeneticAlgorithm
from metalab.search.space import CategoricalGene, FloatGene, IntGene, SearchSpace

__all__ = ["Candidate", "CategoricalGene", "FloatGene", "GeneticAlgorithm", "IntGene", "SearchSpace", "Searcher",
           "TellError"]
