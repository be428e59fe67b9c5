"""The operator's entry point for deploying the registry: ``python -m scripts.deploy CONFIG`` from a
checkout does what ``cocoon deploy CONFIG`` does. The library is :mod:`node.deploy`; the example
files are in ``scripts/deploy/examples/`` and the guide in ``scripts/deploy/README.md``."""
