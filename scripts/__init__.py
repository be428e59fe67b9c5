"""Operator scripts of the network (deployment: :mod:`scripts.deploy`)."""
