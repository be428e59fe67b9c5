"""The contracts in Python: layouts, messages, getters and addresses (one module per contract), the
embedded chain (:mod:`wrappers.chain`), keys (:mod:`wrappers.keys`), exit codes (:mod:`wrappers.errors`)."""

TON = 10**9  # nanoTON in one TON: the one definition
