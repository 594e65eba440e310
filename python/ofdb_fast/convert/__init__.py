"""Dataset converters to the MVTec AD layout (pure I/O, no GPU)."""

from ._common import ConversionReport
from .kolektor import convert_kolektorsdd, convert_kolektorsdd2, seeded_permutation
from .visa import VisaReport, convert_visa

__all__ = ["ConversionReport", "VisaReport", "convert_kolektorsdd", "convert_kolektorsdd2", "convert_visa",
           "seeded_permutation"]
