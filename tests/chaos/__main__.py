"""`python -m tests.chaos`: run the seeded fault and kill schedules and print the figures."""

import sys

from tests.chaos.schedules import main

sys.exit(main())
