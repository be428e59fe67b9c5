"""``python -m scripts.deploy CONFIG [options]`` from a checkout: the same command as ``cocoon deploy``."""
from node.cli.deploy import deploy

if __name__ == "__main__":
    deploy(prog_name="python -m scripts.deploy")
