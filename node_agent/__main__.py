"""`python -m node_agent` runs the agent."""

import sys

from node_agent.main import main

sys.exit(main())
