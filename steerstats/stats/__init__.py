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

# Input checks other layers reuse on their own tables (the analysis' design and summary tables).
from ._data import numeric_values, require_columns  # noqa: E402

__all__ += ["numeric_values", "require_columns"]

from .ranges import *  # noqa: F403, E402
from .ranges import __all__ as _ranges_all  # noqa: E402

__all__ += _ranges_all

from .roles import *  # noqa: F403, E402
from .roles import __all__ as _roles_all  # noqa: E402

__all__ += _roles_all

from .raters import *  # noqa: F403, E402
from .raters import __all__ as _raters_all  # noqa: E402

__all__ += _raters_all

from .gstudy import *  # noqa: F403, E402
from .gstudy import __all__ as _gstudy_all  # noqa: E402

__all__ += _gstudy_all

from .robustness import *  # noqa: F403, E402
from .robustness import __all__ as _robustness_all  # noqa: E402

__all__ += _robustness_all

from .validity import *  # noqa: F403, E402
from .validity import __all__ as _validity_all  # noqa: E402

__all__ += _validity_all
