# A package, so that this directory's conftest is imported as browser.conftest and never
# shadows tests/conftest.py for modules that do `from conftest import ...`.
