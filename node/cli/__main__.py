"""``python -m node.cli`` is ``cocoon``."""
from node.cli.root import main

main(prog_name="cocoon")
