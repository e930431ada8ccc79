"""Modules: the layer API (``Module``, ``Conv2d``, ...), the classification
heads of the paper (GAP ... GM-SOP) and the head registry used by
``gmsop_np.models``."""

from .heads import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .mixture import *  # noqa: F401,F403
from .module import *  # noqa: F401,F403
from .sop import *  # noqa: F401,F403
