"""``python -m tally_pacing``: the faust worker with its API (one process).

``--validate`` checks the settings and exits; ``--settings`` lists them.
"""

from __future__ import annotations

import sys

from tally_kit import logs
from tally_kit.clock import clock_from_setting
from tally_kit.settings import validate_main

from .settings import SPEC


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    settings = validate_main(SPEC, args)
    logs.configure("pacing")
    from .app import run

    # faust's Worker parses sys.argv itself; it is given none of ours
    sys.argv = sys.argv[:1]
    run(settings, clock_from_setting(settings.pacing_clock_file or None))


if __name__ == "__main__":
    main()
