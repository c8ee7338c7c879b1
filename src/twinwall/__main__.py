from twinwall.cli import main

raise SystemExit(main())
