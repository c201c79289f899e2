"""Backbones and heads: plain nn.Modules, free of any training logic."""
