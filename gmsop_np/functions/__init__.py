"""Differentiable functions, one file per topic. Import them from ``gmsop_np.functional``."""
