from modelforge.cli import main

raise SystemExit(main())
