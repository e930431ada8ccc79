"""Every differentiable function of gmsop_np, conventionally imported as ``F``::

    import gmsop_np.functional as F
    y = F.relu(F.conv2d(x, W, stride=1, padding=1))

Each name is defined next to its Function class in ``gmsop_np/functions/<topic>.py``.
"""

from .functions.activation import *  # noqa: F401,F403
from .functions.basic import *  # noqa: F401,F403
from .functions.conv import *  # noqa: F401,F403
from .functions.covpool import *  # noqa: F401,F403
from .functions.dispatch import *  # noqa: F401,F403
from .functions.gating import *  # noqa: F401,F403
from .functions.loss import *  # noqa: F401,F403
from .functions.matrix_sqrt import *  # noqa: F401,F403
from .functions.norm import *  # noqa: F401,F403
from .functions.pooling import *  # noqa: F401,F403
from .functions.triu import *  # noqa: F401,F403
