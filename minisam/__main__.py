from minisam.cli import main

raise SystemExit(main())
