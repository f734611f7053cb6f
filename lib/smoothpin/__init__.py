"""smoothpin: the library behind the executable notes on *To smooth a cloud or to pin it down*
(Reu, Vargas, Kerekes & Bronstein, UAI 2024; arXiv 2305.09605).

smooth = the Ornstein-Uhlenbeck (VP-SDE) noising process, pin = the Föllmer drift / pinned Brownian
motion. Notebooks do ``import smoothpin as sp``. Each module defines ``__all__``; the public names
are re-exported here.
"""
__version__ = "0.1.0"

from ._checks import *  # noqa: F401,F403
from .targets import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .semigroups import *  # noqa: F401,F403
from .bounds import *  # noqa: F401,F403
from .nets import *  # noqa: F401,F403
from .train import *  # noqa: F401,F403
from .sample import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .cache import *  # noqa: F401,F403
from .plotting import *  # noqa: F401,F403
from .regularity import *  # noqa: F401,F403
from .control import *  # noqa: F401,F403
from .approximation import *  # noqa: F401,F403
