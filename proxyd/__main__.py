from proxyd.cli import main

raise SystemExit(main())
