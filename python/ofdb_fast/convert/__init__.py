"""Dataset converters to the MVTec AD layout (pure I/O, no GPU)."""

from .kolektor import ConversionReport, convert_kolektorsdd, convert_kolektorsdd2, seeded_permutation

__all__ = ["ConversionReport", "convert_kolektorsdd", "convert_kolektorsdd2", "seeded_permutation"]
