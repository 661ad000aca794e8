"""labhelpers: the helper package of SAE Lab.

One module per idea; each notebook imports what earlier notebooks had you build.
"""

__version__ = "0.1.0"
