import sys

from stomprelay.cli import main

sys.exit(main())
