"""``python -m eqxllm``: the ``eqxllm`` command line (as ``python -m eqxllm.cli``)."""

from eqxllm.cli import main

raise SystemExit(main())
