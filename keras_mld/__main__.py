"""``python -m keras_mld`` is the ``keras-mld`` command."""
from keras_mld.app.cli import main

raise SystemExit(main())
