-- 0003: auth_cleanup's access paths.
--
-- A key or session ENDS at least(expires_at, revoked_at) (least() skips NULLs: a key
-- that never expires ends when it is revoked; NULL = still open-ended). auth_cleanup
-- walks these with keyset pagination on (ended, id):
--   - active keys that have ended        -> deactivated (deactivated_at set once);
--   - deactivated keys ended long ago    -> deleted after the key retention;
--   - sessions ended long ago            -> deleted after the session retention.
-- Partial on deactivated_at, so each pass reads only its own rows: a deactivated
-- key leaves the first index and enters the second.

CREATE INDEX api_keys_active_by_end ON api_keys ((least(expires_at, revoked_at)), id)
    WHERE deactivated_at IS NULL;
CREATE INDEX api_keys_deactivated_by_end ON api_keys ((least(expires_at, revoked_at)), id)
    WHERE deactivated_at IS NOT NULL;
CREATE INDEX user_sessions_by_end ON user_sessions ((least(expires_at, revoked_at)), id);
