"""``python -m gradft.report``: see ``gradft.report.build``."""

from gradft.report.build import main

raise SystemExit(main())
