import sys

from quiver.pipelines.cli import main

sys.exit(main())
