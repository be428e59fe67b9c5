"""Money off chain, one module per job: :mod:`.pricing` (what a request costs), :mod:`.vouchers`
(the payer's signer and the payee's tracker of cumulative vouchers), :mod:`.policy` (when a payee
claims, what it is exposed to) and :mod:`.receipts` (what a worker signs per job, and checking it).

Where the byte layouts live: a layout a contract checks (the escrow's signed statement
``tag channel amount``, the stake statement a receipt is) is defined once, in ``wrappers/`` next to the
contract object that sends it (:func:`wrappers.escrow.statement_bits`, :class:`wrappers.stake.Statement`),
because the contract objects need it and ``wrappers`` never imports ``node``. This package signs and
checks those bytes through them; it defines no on-chain layout of its own. The receipt's payload is
not read by any contract, so its layout is here (:mod:`.receipts`). No click, no event loop of its own.
"""
