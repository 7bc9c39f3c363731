"""Webhooks: a callback_url named by an execute request, a batch, an API key (its default) or a
Judge0 submission is called once the execution is terminal, by a worker, signed, with retries.

- urls.py: which URLs may be called (http/https, public addresses unless allow-listed), checked
  at submit time when the host resolves then, and again against the address actually connected.
- sender.py: one HTTP try, connecting to a vetted address only, never following a redirect.
- signing.py: the per-user secret and the `X-LiveCode-Signature` header.
- store.py: the table of due deliveries (scheduled in the submission's transaction, leased per
  try, so that a worker dying mid-try leaves it due again: at least once).
- dispatch.py: what a worker runs after its final write and periodically: claim, build, send, record.
"""
