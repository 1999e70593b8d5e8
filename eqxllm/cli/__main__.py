from eqxllm.cli import main

raise SystemExit(main())
