"""`python -m edgenas` (also what `torchrun -m edgenas` runs)."""
from edgenas.cli import main

raise SystemExit(main())
