from steerstats.stats.mixed import *  # noqa: E402,F401,F403
