"""The package's version, written here only.

`setup.py` reads this file as text (it does not import the package, so
building a wheel needs no TensorFlow), and `tfrs_negsamp.__version__` is
imported from it. Releases follow CHANGELOG.md; between releases the version
is the next one with a `.dev0` suffix (PEP 440).
"""

__version__ = "0.2.0.dev0"
