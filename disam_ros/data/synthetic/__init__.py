"""The synthetic multi-condition town: one world, many dated drives under ten conditions, exact ground truth.

The demo, the tests and the benchmarks need images of the same places under changing conditions and no
data set may be downloaded, so the package renders its own (numpy ray caster). `generate` is the entry
point (`disam-synth`); the other modules are its parts: `world`/`scene`/`route` build the town and the
drives, `render`/`shade`/`light`/`materials`/`weather` turn a pose and a condition into an image,
`conditions`/`sun` describe the conditions, `sheet` draws the contact sheet.
"""
from disam_ros.data.synthetic.generate import (
    DEMO_CONFIG,
    WorldConfig,
    load_world,
    main,
    make_town,
    make_world,
    plan_traversal,
)

__all__ = ["DEMO_CONFIG", "WorldConfig", "load_world", "main", "make_town", "make_world", "plan_traversal"]
