"""Tests of bbjax.strategies.pbt."""
