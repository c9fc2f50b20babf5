from steerstats.stats.mixed import *  # noqa: E402,F401,F403
from steerstats.stats.reliability import *  # noqa: E402,F401,F403
from steerstats.stats.dose import *  # noqa: E402,F401,F403
