"""gmsop_np: GM-SOP (NeurIPS 2018) from scratch on NumPy/CuPy.

    import gmsop_np as gs
    import gmsop_np.functional as F

``gs`` holds the engine (Tensor, Parameter, no_grad, backends, gradient check);
``F`` every differentiable function; ``gs.nn`` the layers and heads;
``gs.models`` the paper's networks.
"""

__version__ = "0.2.0.dev0"  # the one place of the version (pyproject.toml reads it from here)

from . import checkpoint, functional, models, nn, optim
from .backend import cupy_available, get_array_module, get_backend, to_cpu, to_gpu, using_backend
from .config import Config, debug, enable_grad, is_debug, is_grad_enabled, no_grad, using_config
from .core import Function, Parameter, Tensor, as_tensor, backward, tensor
from .gradcheck import GradientCheckError, check_backward, numerical_vjp
from .presets import PRESETS, get_preset

__all__ = [
    "__version__",
    # submodules
    "checkpoint",
    "functional",
    "models",
    "nn",
    "optim",
    # backends
    "cupy_available",
    "get_array_module",
    "get_backend",
    "to_cpu",
    "to_gpu",
    "using_backend",
    # switches
    "Config",
    "debug",
    "enable_grad",
    "is_debug",
    "is_grad_enabled",
    "no_grad",
    "using_config",
    # the engine
    "Function",
    "Parameter",
    "Tensor",
    "as_tensor",
    "backward",
    "tensor",
    "GradientCheckError",
    "check_backward",
    "numerical_vjp",
    "PRESETS",
    "get_preset",
]
