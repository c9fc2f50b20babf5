__all__: list[str] = []

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
