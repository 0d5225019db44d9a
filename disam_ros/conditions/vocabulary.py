"""The condition vocabulary shared by the table, the calendar and the selector (ordered where a distance
between values means something)."""
from __future__ import annotations

WEATHERS = ("sunny", "overcast", "cloudy", "rain", "snow", "fog")
DAYLIGHTS = ("day", "low_sun", "twilight", "night")  # ordered: distance = darkness steps
FOLIAGES = ("none", "mixed", "full")  # ordered: distance = leaf-cover steps
SEASONS = ("winter", "spring", "summer", "autumn")
UNKNOWN = "unknown"

MIN_WALL_CLOCK_STAMP = 946684800.0  # 2000-01-01: stamps before this are sim/monotonic time, not dates
TROPIC_DEG = 23.44

# Northern-hemisphere foliage by month (Jan..Dec), calibrated on CMU-Seasons (Pittsburgh): bare Dec-Apr,
# leaf-out in May, full June-September, turning Oct-Nov.
DEFAULT_FOLIAGE_BY_MONTH = ("none", "none", "none", "none", "mixed", "full",
                            "full", "full", "full", "mixed", "mixed", "none")

