"""Authentication data on PostgreSQL: API keys (`keys`), sessions, and their cleanup.

- `beatless.auth.keys`: issue, verify (constant time) and revoke API keys,
  stored as SHA-256 digests with a display prefix (also offered by
  `beatless.credits`, where callers have always found them);
- `beatless.auth.cleanup`: the `auth_cleanup` job's core — ended keys are
  deactivated, then deleted after their retention; old sessions deleted.
"""
