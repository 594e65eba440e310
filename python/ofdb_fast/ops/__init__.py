"""Public ops, one module per op; each dispatches to its backends."""
