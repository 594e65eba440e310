"""Fractal side: IFS sampling, rendering pipeline, datasets, `generate`, pretraining."""
