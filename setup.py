"""tfrs-negsamp: negative sampling for two-tower retrieval with TFRS."""

import setuptools

setuptools.setup(
    name="tfrs-negsamp",
    version="0.1.0",
    description=("Two-tower retrieval (TensorFlow Recommenders) trained with "
                 "the negative-sampling strategies of the literature, "
                 "exported with a ScaNN index."),
    packages=setuptools.find_packages(include=["tfrs_negsamp",
                                               "tfrs_negsamp.*",
                                               "trainers", "trainers.*"]),
    python_requires=">=3.9,<3.13",
    install_requires=[
        # scann 1.4.2 is built against TF 2.20 (its op library does not load
        # with 2.21), and TFRS 0.7.7 needs Keras 2 (tf-keras).
        "tensorflow==2.20.0",
        "tf-keras~=2.20.0",
        "tensorflow-recommenders==0.7.7",
        "scann==1.4.2",
        "tensorflow-datasets",
        # TFDS's download path imports it (through etils) without declaring
        # it; without it `tfds.load` fails before any download is tried.
        "importlib_resources",
        "absl-py",
        # Benchmark and evaluation plots (PNG).
        "matplotlib",
        # The REST server (trainers.serve); see tfrs_negsamp/serving/server.py.
        "aiohttp>=3.9,<4",
        # trainers.tune: per-sampler hyperparameter search (TPE sampler,
        # SQLite storage so that an interrupted search resumes).
        "optuna>=4",
        # The EASE^R baseline (models/ease.py): in-place Cholesky inverse
        # (LAPACK spotrf/spotri) and sparse user-item matrices.
        "scipy",
    ],
    extras_require={"test": [
        "pytest",
        # tests/colab executes the notebooks (nbclient + an ipykernel of
        # the venv's python).
        "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
    ]},
)
