"""gmsop_np: GM-SOP (NeurIPS 2018) from scratch on NumPy/CuPy.

    import gmsop_np as gs
    import gmsop_np.functional as F

``gs`` holds the engine (Tensor, Parameter, no_grad, backends, gradient check);
``F`` every differentiable function; ``gs.nn`` the layers and heads;
``gs.models`` the paper's networks.
"""

from . import (  # noqa: F401,E402  (after the engine: they build on it)
    checkpoint,
    functional,  # noqa: F401  (installs Tensor operators)
    models,
    nn,
    optim,
)
from .backend import (  # noqa: F401
    cupy_available,
    get_array_module,
    get_backend,
    set_backend,
    to_cpu,
    to_gpu,
    using_backend,
)
from .config import (  # noqa: F401
    Config,
    enable_grad,
    eval_mode,
    is_grad_enabled,
    is_training,
    no_grad,
    train_mode,
    using_config,
)
from .core import Function, Parameter, Tensor, as_tensor, backward, tensor  # noqa: F401
from .gradcheck import GradientCheckError, check_backward, numerical_vjp  # noqa: F401
from .presets import PRESETS, get_preset  # noqa: F401

__version__ = "0.1.0"
