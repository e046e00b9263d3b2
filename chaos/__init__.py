"""Mooring's chaos suite: chaostoolkit experiments, their actions and probes, and the
invariant checkers (I1-I4) that decide whether an experiment passed."""

from chaos import _local as local

__all__ = ["local"]
