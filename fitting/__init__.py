"""Fitting against experiment: objectives, frame reweighting, force-field fitting, XRD refinement."""

__all__: list[str] = []
