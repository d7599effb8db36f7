"""Head benchmarks: GAP vs ML-Decoder vs Query2Label. A thin front end of keras_mld.app.bench.

    python benchmarks/heads.py --quick
    KERAS_BACKEND=jax python benchmarks/heads.py --backbone resnet50 --size 224

See benchmarks/README.md and ``python benchmarks/heads.py --help``.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if __name__ == "__main__":
    from keras_mld.app.bench import main

    sys.exit(main(sys.argv[1:]))
