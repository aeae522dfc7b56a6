"""The model zoo. Importing this package imports every family module, which registers its variants."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "layers":
        importlib.import_module(f"{__name__}.{_module.name}")
