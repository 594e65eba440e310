"""Pure-NumPy reference implementations (the spec in code). Imports neither torch nor ``_C``."""
