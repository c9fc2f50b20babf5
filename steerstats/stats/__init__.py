"""The analysis layer: statistics on the tidy ``scores`` table, each returning a tidy DataFrame.

Every function takes a DataFrame in the form of ``steerstats.schema.SCORE_COLUMNS`` (column
names overridable by keyword) and knows nothing of backends, caches or APIs.
"""

from .bootstrap import *  # noqa: F403
from .bootstrap import __all__ as _bootstrap_all
from .examples import *  # noqa: F403
from .examples import __all__ as _examples_all

__all__ = [*_bootstrap_all, *_examples_all]

from .contrasts import *  # noqa: F403, E402
from .contrasts import __all__ as _contrasts_all  # noqa: E402

__all__ += _contrasts_all

from .accuracy import *  # noqa: F403, E402
from .accuracy import __all__ as _accuracy_all  # noqa: E402

__all__ += _accuracy_all

from .tradeoff import *  # noqa: F403, E402
from .tradeoff import __all__ as _tradeoff_all  # noqa: E402

__all__ += _tradeoff_all

from .mixed import *  # noqa: F403, E402
from .mixed import __all__ as _mixed_all  # noqa: E402

__all__ += _mixed_all

from .reliability import *  # noqa: F403, E402
from .reliability import __all__ as _reliability_all  # noqa: E402

__all__ += _reliability_all

from .dose import *  # noqa: F403, E402
from .dose import __all__ as _dose_all  # noqa: E402

__all__ += _dose_all

from .power import *  # noqa: F403, E402
from .power import __all__ as _power_all  # noqa: E402

__all__ += _power_all

from .validity import *  # noqa: F403, E402
from .validity import __all__ as _validity_all  # noqa: E402

__all__ += _validity_all
