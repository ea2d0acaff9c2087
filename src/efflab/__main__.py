from efflab.cli import main

raise SystemExit(main())
