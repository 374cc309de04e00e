"""tfrs-negsamp: negative sampling for two-tower retrieval with TFRS."""

import os

import setuptools

_HERE = os.path.dirname(os.path.abspath(__file__))


def _read(*parts):
  with open(os.path.join(_HERE, *parts), encoding="utf-8") as f:
    return f.read()


def _version():
  """`__version__` of tfrs_negsamp/version.py, read without importing the
  package (which would import TensorFlow)."""
  namespace = {}
  source = _read("tfrs_negsamp", "version.py")
  exec(source, namespace)  # pylint: disable=exec-used
  return namespace["__version__"]


setuptools.setup(
    name="tfrs-negsamp",
    version=_version(),
    description=("Two-tower retrieval (TensorFlow Recommenders) trained with "
                 "the negative-sampling strategies of the literature, "
                 "exported with a ScaNN index."),
    long_description=_read("README.md"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
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
        # The EASE^R baseline (models/ease.py): in-place Cholesky inverse
        # (LAPACK spotrf/spotri) and sparse user-item matrices.
        "scipy",
    ],
    # What only the programs in trainers/ need; the core library
    # (tfrs_negsamp) imports none of it. The README's two commands install
    # `.[apps,test,docs]`.
    extras_require={
        # The REST server (trainers.serve, trainers/serving/server.py).
        "server": ["aiohttp>=3.9,<4"],
        # Benchmark and evaluation plots (PNG).
        "plots": ["matplotlib"],
        # trainers.tune: per-sampler hyperparameter search (TPE sampler,
        # SQLite storage so that an interrupted search resumes).
        "tune": ["optuna>=4"],
        "apps": ["aiohttp>=3.9,<4", "matplotlib", "optuna>=4"],
        # The documentation site (`make docs`: mkdocs.yml, docs/): MkDocs
        # with the API reference generated from the docstrings by
        # mkdocstrings (griffe reads the sources; no TensorFlow import).
        "docs": ["mkdocs>=1.6,<2", "mkdocstrings[python]>=1.0,<2"],
        "test": [
            "pytest",
            # Property-based tests of the loaders, the flag checks and the
            # REST request parser (a bounded example count by default).
            "hypothesis>=6.100",
            # tests/colab executes the notebooks (nbclient + an ipykernel of
            # the venv's python).
            "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
        ],
    },
)
