import sys

from semcached.cli import main

sys.exit(main())
